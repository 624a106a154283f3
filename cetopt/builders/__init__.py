"""Problem builders: candidates (quantised, low-rank, series) + the signals a cost model needs -> AllocationProblem.

The build is a short pipeline (cetopt.builders.second_order.build): make candidates (candidates.py), collect the
curvature signals the chosen cost model declares (signals.py), score with the registered cost model
(cetopt.costmodels), filter (filters.py), assemble (assemble.py). The package import stays light (no torch).
"""

from cetopt.costmodels.registry import cost_model_names, get_cost_model

__all__ = ["cost_model_names", "get_cost_model"]

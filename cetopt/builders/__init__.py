"""Problem builders: curvature + candidates (quantised, low-rank, series) -> AllocationProblem.

The package import stays light (no torch): import ``cetopt.builders.second_order.build`` and
``cetopt.builders.candidates.Levels`` where you need them.
"""

from cetopt.builders.costs import COST_MODELS, ROUNDINGS, CostModel, cost_model

__all__ = ["COST_MODELS", "ROUNDINGS", "CostModel", "cost_model"]

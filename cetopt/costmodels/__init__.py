"""Cost models: each layer candidate's predicted loss change from curvature signals, one class per model,
registered by name (``cetopt.costmodels.registry``). Importing this package stays light (numpy only)."""

from cetopt.costmodels.base import SIGNALS, CostEstimate, CostModel, LayerSignals
from cetopt.costmodels.registry import cost_model_names, get_cost_model, register

__all__ = ["SIGNALS", "CostEstimate", "CostModel", "LayerSignals", "cost_model_names", "get_cost_model", "register"]

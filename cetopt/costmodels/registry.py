"""The cost-model registry: name -> "module:Class", imported only when the model is used.

Adding a cost model is one module plus one ``register`` line below; tests/costmodels/test_costmodel_conformance.py then
holds it to the same checks as every other registered model.
"""

from __future__ import annotations

from cetopt._imports import resolve
from cetopt.costmodels.base import SIGNALS, CostModel
from cetopt.errors import ProblemError

_REGISTRY: dict[str, str | type[CostModel]] = {}

# the default recipe's cost model (cetopt.recipe.DEFAULT_RECIPE gives the choice and its measurements), named here
# too because the recipe stands above the cost models and stays numpy-free; tests/test_recipes.py holds them equal
DEFAULT_COST_MODEL = "cet-upper"


def register(name: str, target: str | type[CostModel], *, replace: bool = False) -> None:
    """Register a cost model under ``name`` (an import string "pkg.module:Class" or a CostModel subclass)."""
    if name in _REGISTRY and not replace:
        raise ProblemError(f"a cost model named {name!r} is already registered; pass replace=True", field="method")
    _REGISTRY[name] = target


def cost_model_names() -> tuple[str, ...]:
    """Every registered cost model, in registration order (nothing is imported)."""
    return tuple(_REGISTRY)


def get_cost_model(name: str) -> CostModel:
    """An instance of the cost model ``name``."""
    if name not in _REGISTRY:
        raise ProblemError(f"unknown cost model {name!r}; use one of {', '.join(_REGISTRY)}", field="method")
    target = _REGISTRY[name]
    if isinstance(target, str):
        target = resolve(target)
        unknown = set(target.needs) - SIGNALS
        if unknown:
            raise ProblemError(f"cost model {name!r} needs unknown signals {sorted(unknown)}; known: {sorted(SIGNALS)}",
                               field="method")
        _REGISTRY[name] = target
    return target()


register("cet", "cetopt.costmodels.cet:Cet")
register("cet-eigen", "cetopt.costmodels.cet:CetEigen")
register("cet-trace", "cetopt.costmodels.cet:CetTrace")
register("cet-nograd", "cetopt.costmodels.cet:CetNoGrad")
register("cet-eigen-nograd", "cetopt.costmodels.cet:CetEigenNoGrad")
register("llc", "cetopt.costmodels.llc:Llc")
register("hawq-v3", "cetopt.costmodels.hawq:HawqV3")
register("fisher", "cetopt.costmodels.fisher:FisherDiagonal")
register("cet-shrink", "cetopt.costmodels.shrink:CetShrink")
register("cet-holdout", "cetopt.costmodels.holdout:CetHoldout")
register("measured", "cetopt.costmodels.measured:Measured")
register("cet-trust", "cetopt.costmodels.trust:CetTrust")
register("measured-shrink", "cetopt.costmodels.measured_shrink:MeasuredShrink")
register("cet-upper", "cetopt.costmodels.upper:CetUpper")
register("cet-upper-monotone", "cetopt.costmodels.monotone:CetUpperMonotone")

"""The cost-model registry: name -> "module:Class", imported only when the model is used.

Adding a cost model is one module plus one ``register`` line below; tests/costmodels/test_costmodel_conformance.py then
holds it to the same checks as every other registered model.
"""

from __future__ import annotations

from cetopt._imports import resolve
from cetopt.costmodels.base import SIGNALS, CostModel
from cetopt.errors import ProblemError

_REGISTRY: dict[str, str | type[CostModel]] = {}

# what `cetopt extract` / `demo` / `bench` use when no --method is given: chosen by measurement, not elegance.
# cet-upper on the MSE-clipped grid (cetopt.workflow.DEFAULT_QUANTIZER) is the only model that passed every cell
# measured: it ties HAWQ-V3 on all six zoo cells over 3 seeds (benchmarks/results/cost_models_mseclip.md) and is
# at least as good as HAWQ-V3 and better than uniform on MobileNetV2 and MiniLM at 3/4/5 bits
# (benchmarks/results/cost_models_pretrained_mseclip.md); cet-shrink, measured in the same files, falls behind
# HAWQ-V3 on MiniLM at 3 bits and on the MNIST-1D ResNet at 3 and 4 bits
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

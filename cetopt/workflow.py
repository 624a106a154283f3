"""Run a method on a model: the shared layer that the demo, the bench, the proofs and the notebooks stand on.

``build_for`` turns a :class:`~cetopt.modelspec.ModelSpec` into a built problem (named by model, method and
rounding, with provenance); :mod:`cetopt.measure` applies and measures plans; :mod:`cetopt.baselines` holds
the baseline allocations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from cetopt.costmodels.registry import DEFAULT_COST_MODEL
from cetopt.modelspec import ModelSpec
from cetopt.problem.model import Budget
from cetopt.quant.quantizers import QuantizerSpec

if TYPE_CHECKING:
    from cetopt.builders.second_order import BuiltProblem

DEFAULT_BITS = (2, 3, 4, 6, 8)
# the candidates' grid that build_for (so extract, demo, bench, rerank) uses when none is given: per-channel
# symmetric with the MSE-optimal clipping ratio. Chosen with DEFAULT_COST_MODEL by the same measurements: on the
# plain max|w| grid every method loses almost all of MobileNetV2's top-1 agreement at 3 bits, on this one the
# default keeps much of it (benchmarks/results/cost_models_pretrained_*.md). The library's QuantizerSpec() (and a
# plan file without a quantiser) stays the plain grid.
DEFAULT_QUANTIZER = QuantizerSpec(clip="mse")
# how build_for (so extract, plan, demo) rounds the candidates when no rounding is given: a registered rounding of
# cetopt.quant.rounding. Switching the project's default is this one line (benchmarks/results/rounding_*.md).
DEFAULT_ROUNDING = "nearest"


def problem_name(spec: ModelSpec, method: str, rounding: str | Sequence[str] = "nearest") -> str:
    """``<model>-<method>[-<rounding>[+<rounding>...]]``: distinct per method and rounding, so problem files of
    one model never collide."""
    text = rounding if isinstance(rounding, str) else "+".join(rounding)
    return f"{spec.name}-{method}" + ("" if text == "nearest" else f"-{text}")


def objective_name(spec: ModelSpec) -> str:
    """What the spec's problems minimise, for their metadata: the fidelity objective and why it was chosen, or
    the user's ``loss_fn`` by name."""
    describe = getattr(spec.loss_fn, "describe", None)
    if spec.fidelity and callable(describe):
        return str(describe())
    fn = spec.loss_fn
    return f"loss_fn {getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def build_for(spec: ModelSpec, *, method: str = DEFAULT_COST_MODEL, bits: Sequence[int] = DEFAULT_BITS,
              budget: Budget | None = None, target: str | None = None, quantizer: QuantizerSpec = DEFAULT_QUANTIZER,
              **options: Any) -> "BuiltProblem":
    """The allocation problem of ``spec`` under cost model ``method`` and its candidates' weights.

    Args:
        budget: default 3 average bits (LLC: its own lossless form, size minimised).
        quantizer: the candidates' grid (default :data:`DEFAULT_QUANTIZER`), recorded in the problem so plans and
            ``apply`` use it.
        target: how the model was named (zoo name, module:function, file.py:function), recorded as metadata
            "model_target" so bench, apply and evaluate can load the model again.
        options: cetopt.builders.second_order.build options (rounding: default :data:`DEFAULT_ROUNDING`;
            group_sizes, interactions, layer_eps, settings, curvature, levels, max_loss, ...).
    """
    from cetopt import __version__
    from cetopt.builders.second_order import build

    if budget is None and method != "llc":
        budget = Budget(avg_bits=3.0)
    from cetopt.fingerprint import fingerprint_spec

    from cetopt.curvature.layers import find_layers
    from cetopt.artifact import model_target
    from cetopt.quant.pack import buffer_bits

    layers = find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude)
    other = sum(p.numel() for p in spec.model.parameters()) - sum(r.weight.numel() for r in layers)
    metadata = {"model": spec.name, "data": spec.data, "cetopt_version": __version__,
                "model_target": model_target(target or spec.name), "other_params": int(other),
                "buffer_bits": buffer_bits(spec.model),
                "objective": objective_name(spec),
                **{k: v for k, v in spec.metadata.items() if isinstance(v, (str, int, float, bool))},
                **fingerprint_spec(spec).as_metadata()}  # ties the file to these weights and calibration data
    if options.get("rounding") is None:
        options["rounding"] = DEFAULT_ROUNDING
    return build(spec.model, spec.loss_fn, spec.calibration, name=problem_name(spec, method, options["rounding"]),
                 bits=bits, method=method, budget=budget, layers=spec.quantisable_layers(), metadata=metadata,
                 quantizer=quantizer, **{"validation": spec.validation, **options})

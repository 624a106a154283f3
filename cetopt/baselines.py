"""The baseline allocations every comparison uses: uniform precision and HAWQ-V3 (trace x |Q(W) - W|^2, solved
exactly), built on the same model as the plan they are compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from cetopt.errors import ProblemError
from cetopt.spec import ModelSpec
from cetopt.problem.model import AllocationProblem, Budget

if TYPE_CHECKING:
    import torch


def uniform_bits(problem: AllocationProblem, bits: float) -> dict[str, int] | None:
    """Every layer at ``bits`` (None when ``bits`` is not an integer offered by every layer)."""
    if not float(bits).is_integer():
        return None
    b = int(bits)
    if any(b not in {c.bits for c in layer.choices if c.rank is None and c.terms == 1} for layer in problem.layers):
        return None
    return {layer.name: b for layer in problem.layers}


def hawq_v3_problem(spec: ModelSpec, bits: Sequence[int], **options: object) -> AllocationProblem:
    """HAWQ-V3's problem of ``spec``: Omega = Tr(H)/n |Q_b(W) - W|^2 per layer and candidate bit-width."""
    from cetopt.workflow import build_for

    return build_for(spec, method="hawq-v3", bits=bits, budget=Budget(avg_bits=4.0), **options).problem  # type: ignore[arg-type]


def hawq_v3_bits(problem: AllocationProblem, avg_bits: float, solver: str = "dp") -> Mapping[str, int] | None:
    """HAWQ-V3's plan at ``avg_bits`` on its own problem (None when infeasible)."""
    from cetopt.solvers.api import solve

    result = solve(problem.with_budget(Budget(avg_bits=avg_bits)), solver)
    return dict(result.bits) if result.success else None


# Baselines to compare the plans against (uniform bit-widths, HAWQ-V3). Bias correction: no CET cost model or plan applies one
# (grep cetopt for "bias"), so HAWQ-V3 is compared without one too: both get the same treatment, none.

@dataclass(frozen=True)
class GradientStep:
    """FP32 weights after one full-batch gradient step on the mean calibration loss.

    Attributes:
        weights: layer -> W - lr g (every quantisable layer; other parameters unchanged).
        lr: the step size, the best of the grid on the calibration loss (the most a free step can gain there).
        calibration_dloss: the calibration loss change at that step (loss units; negative = the step helped).
    """

    weights: Mapping[str, "torch.Tensor"]
    lr: float
    calibration_dloss: float


def gradient_step(spec: ModelSpec, layers: Sequence[str],
                  lrs: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)) -> GradientStep:
    """One calibration gradient step on ``layers``' weights: shows whether a plan's measured gain over FP32 is
    more than a free training step would give (the step size is picked on the calibration loss)."""
    import torch

    from cetopt._hooks import eval_mode
    from cetopt.measure import Measurer

    if not lrs or any(not lr > 0 for lr in lrs):
        raise ProblemError("lrs must be positive step sizes", field="lrs")
    from cetopt.curvature.layers import layer_weight

    params = [layer_weight(spec.model, n) for n in layers]
    spec.model.zero_grad(set_to_none=True)
    with torch.enable_grad(), eval_mode(spec.model):
        for batch in spec.calibration:
            (spec.loss_fn(spec.model, batch) / len(spec.calibration)).backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    spec.model.zero_grad(set_to_none=True)
    measurer = Measurer(spec)
    best: GradientStep | None = None
    for lr in lrs:
        weights = {n: p.detach() - lr * g for n, p, g in zip(layers, params, grads)}
        change = measurer.calibration_dloss(weights)
        if best is None or change < best.calibration_dloss:
            best = GradientStep(weights=weights, lr=float(lr), calibration_dloss=float(change))
    return best  # type: ignore[return-value]


def mse_clip_weights(spec: ModelSpec, bits: Mapping[str, int]) -> dict[str, "torch.Tensor"]:
    """Each layer of ``bits`` rounded to nearest on the MSE-clipped grid (QuantizerSpec(clip="mse")): the same
    bit-widths and packed size as the plan, a different clipping ratio per channel."""
    from cetopt.quant.quantizers import QuantizerSpec, fake_quantize

    from cetopt.curvature.layers import layer_weight

    return {n: fake_quantize(layer_weight(spec.model, n).detach(), b, QuantizerSpec(clip="mse")) for n, b in bits.items()}


def adaround_plan_weights(spec: ModelSpec, bits: Mapping[str, int], *, max_batches: int | None = None
                          ) -> dict[str, "torch.Tensor"]:
    """Each layer of ``bits`` AdaRounded (cetopt.quant.adaround: output reconstruction on the calibration inputs,
    greedy floor/ceil) at the plan's bit-width: same packed size as nearest rounding."""
    from cetopt.quant.adaround import layer_inputs
    from cetopt.quant.rounding.adaround import adaround_weights

    batches = list(spec.calibration)[:max_batches] if max_batches else list(spec.calibration)
    inputs = layer_inputs(spec.model, list(bits), spec.loss_fn, batches)
    return {n: r.weight for n, r in adaround_weights(spec.model, bits, inputs).items()}


def rounded_plan_weights(spec: ModelSpec, bits: Mapping[str, int], rounding: str, quantizer: object = None, *,
                         quadrics: Mapping[str, object] | None = None, grams: Mapping[str, "torch.Tensor"] | None = None
                         ) -> dict[str, "torch.Tensor"]:
    """Each layer of ``bits`` (any allocation: uniform, HAWQ-V3's, the plan's) rounded by the registered
    ``rounding`` (cetopt.quant.rounding) on ``quantizer``'s grid (default cetopt.workflow.DEFAULT_QUANTIZER): the
    baselines given the same rounding as the plan they are compared with, so a table separates what the allocation
    adds from what the rounding adds. Gram matrices (adaround, gptq) come from the spec's calibration batches and
    quadrics (major-axis) from its cached curvature, unless given."""
    from cetopt.builders.second_order import rounding_grams
    from cetopt.quant.rounding import get_rounding
    from cetopt.quant.rounding.base import QUADRIC, RoundingContext
    from cetopt.workflow import DEFAULT_QUANTIZER

    grid = quantizer if quantizer is not None else DEFAULT_QUANTIZER
    chosen = get_rounding(rounding)
    plain = {n: b for n, b in bits.items() if b >= chosen.min_bits}
    if grams is None:
        grams = rounding_grams(spec.model, spec.loss_fn, spec.calibration, list(plain), rounding) or {}
    if quadrics is None and QUADRIC in chosen.needs:
        from cetopt.curvature.extract import extract_curvature
        from cetopt.geometry.layer import LayerQuadric

        curvature = extract_curvature(spec.model, spec.loss_fn, spec.calibration, layers=spec.quantisable_layers(),
                                      show_progress=False, description=spec.name)
        quadrics = {n: LayerQuadric.from_curvature(curvature.layer(n)) for n in plain}
    from cetopt.curvature.layers import layer_weight

    out = {}
    for name, b in bits.items():
        weight = layer_weight(spec.model, name).detach()
        use = rounding if name in plain else "nearest"
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=grams.get(name))
        out[name] = get_rounding(use).round(weight, b, grid, context).weight  # type: ignore[arg-type]
    return out

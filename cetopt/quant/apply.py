"""A plan applied to a model: each planned layer's weight replaced by its compressed weight, with the packed size of
the result (cetopt.quant.pack's one definition). Apart from the plan format (cetopt.quant.plan), which the packing
reads, so that plan -> pack -> apply points one way."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from cetopt.errors import ProblemError
from cetopt.quant.pack import compress_layer, model_packed_size
from cetopt.quant.plan import Plan
from cetopt.quant.rounding.base import RoundingContext

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class AppliedPlan:
    """A compressed copy of a model and its packed storage (cetopt.quant.pack's definition).

    Attributes:
        model: the compressed (fake-quantised, floating-point) copy; the original is untouched.
        size_bits: packed size of the parameters: planned weights (codes, scales, factors, terms) plus every
            other parameter at 32 bits.
        fp32_size_bits: every parameter at 32 bits.
        weights: layer -> its compressed weight (what :class:`cetopt.measure.Measurer` swaps in).
    """

    model: "nn.Module"
    size_bits: int
    fp32_size_bits: int
    weights: Mapping[str, "torch.Tensor"] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """fp32_size_bits / size_bits (the packed ratio)."""
        return self.fp32_size_bits / self.size_bits


def apply_plan(model: "nn.Module", plan: Plan, *, quadrics: Mapping[str, Any] | None = None,
               grams: Mapping[str, Any] | None = None) -> AppliedPlan:
    """A copy of ``model`` with each planned layer's weight replaced by its compressed weight.

    Args:
        quadrics: layer -> cetopt.geometry.LayerQuadric, needed by layers with major-axis rounding
            (:func:`cetopt.artifact.plan_quadrics` computes them from the cached curvature).
        grams: layer -> layer-input Gram matrix, needed by layers rounded by adaround or gptq
            (:func:`cetopt.artifact.plan_grams`).
    """
    from cetopt.curvature.layers import layer_weight

    missing = []
    for name in plan.layers:
        try:
            layer_weight(model, name)
        except ProblemError:
            missing.append(name)
    if missing:
        raise ProblemError(f"plan names layers the model lacks: {missing[:5]}", field="layers")
    quantised = copy.deepcopy(model)
    weights = {}
    for name, choice in plan.layers.items():
        weight = layer_weight(quantised, name)
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=(grams or {}).get(name))
        packed = compress_layer(weight.data, choice, plan.quantizer_of(name), context=context, name=name)
        weight.data.copy_(packed.weight.to(weight.dtype))
        weights[name] = weight.detach()
    size = model_packed_size(model, plan)
    return AppliedPlan(model=quantised, size_bits=size.total_bits, fp32_size_bits=size.fp32_bits, weights=weights)

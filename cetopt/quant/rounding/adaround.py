"""AdaRound as a rounding: each weight's floor or ceiling on the quantiser's grid chosen by exact greedy flips that
lower the layer's output reconstruction error sum_r d_r' G d_r, G = X'X / N the layer-input Gram matrix
(cetopt.quant.adaround, Nagel et al. 2020's objective without the relaxation). Never worse than nearest on the
same grid in that error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.adaround import gram_flips, input_gram
from cetopt.quant.spec import QuantizerSpec
from cetopt.quant.rounding.base import GRAM, Rounding, RoundingContext, check_gram, gram_energy
from cetopt.quant.rounding.grid import Grid, spec_grid


class AdaRound(Rounding):
    name = "adaround"
    needs = frozenset({GRAM})

    def __init__(self, max_steps: int | None = None) -> None:
        self.max_steps = max_steps  # greedy iterations (default: weights per row)

    def codes(self, rows: torch.Tensor, bits: int, spec: QuantizerSpec, context: RoundingContext
              ) -> tuple[torch.Tensor, Grid, dict[str, Any]]:
        gram = context.gram.double()  # type: ignore[union-attr]
        check_gram(gram, rows)
        grid = spec_grid(rows, bits, spec)
        floor, ceil = grid.floor_ceil(rows)
        nearest = grid.nearest(rows)
        up = (nearest == ceil) & (ceil != floor)
        shape = (gram.shape[0], rows.shape[0] // gram.shape[0], rows.shape[1])
        d = (grid.values(nearest) - rows.double()).reshape(shape)
        step = (grid.values(ceil) - grid.values(floor)).reshape(shape)
        _, flipped, steps = gram_flips(d, step, up.reshape(shape), gram, self.max_steps)
        flipped = flipped.reshape(rows.shape)
        other = torch.where(nearest == ceil, floor, ceil)
        return torch.where(flipped, other, nearest), grid, {"flips": int(flipped.sum()), "steps": steps}

    def objective(self, d: torch.Tensor, context: RoundingContext) -> float | None:
        return gram_energy(d, context.gram.double())  # type: ignore[union-attr]


@dataclass(frozen=True)
class AdaRoundResult:
    """One layer at one bit-width.

    Attributes:
        weight: the quantised weight (same shape and dtype as the layer's).
        error_nearest, error: mean squared output reconstruction error E (summed over output channels, mean over
            input samples/positions; the layer output's unit squared) of round-to-nearest and of ``weight``.
        flips: weights rounded away from nearest; steps: greedy iterations run.
    """

    weight: torch.Tensor
    error_nearest: float
    error: float
    flips: int
    steps: int


def adaround_layer(module: nn.Module, inputs: torch.Tensor, bits: int, spec: QuantizerSpec = QuantizerSpec(), *,
                   max_steps: int | None = None) -> AdaRoundResult:
    """Greedy AdaRound of the weight of ``module`` (Linear or Conv2d) to ``bits`` on the layer's ``inputs``.

    Args:
        inputs: the layer's input activations (Linear: (..., in_features); Conv2d: (N, C, H, W)).
        spec: the grid (per channel; any clipping or group setting): cetopt.quant.rounding.adaround.
        max_steps: cap on greedy iterations (default: weights per row, enough for every weight to flip once).
    """
    if bits < 2:
        raise ProblemError(f"AdaRound needs bits >= 2 (got {bits})", field="bits")
    gram, _ = input_gram(module, inputs)
    weight = module.weight.detach()
    rows = weight.double().reshape(weight.shape[0], -1)
    out = AdaRound(max_steps).round(weight, bits, spec, RoundingContext(gram=gram))
    nearest = out.grid.values(out.grid.nearest(weight.reshape(rows.shape)))
    return AdaRoundResult(weight=out.weight, error_nearest=gram_energy(nearest - rows, gram),
                          error=gram_energy(out.weight.double().reshape(rows.shape) - rows, gram),
                          flips=out.info["flips"], steps=out.info["steps"])


def adaround_weights(model: nn.Module, bits: Mapping[str, int], inputs: Mapping[str, torch.Tensor],
                     spec: QuantizerSpec = QuantizerSpec(), **options: Any) -> dict[str, AdaRoundResult]:
    """AdaRound every layer of ``bits`` (layer -> bit-width) on its captured ``inputs``."""
    modules = dict(model.named_modules())
    return {name: adaround_layer(modules[name], inputs[name], b, spec, **options) for name, b in bits.items()}

"""AdaRound as a rounding: each weight's floor or ceiling on the quantiser's grid chosen by exact greedy flips that
lower the layer's output reconstruction error sum_r d_r' G d_r, G = X'X / N the layer-input Gram matrix
(cetopt.quant.adaround, Nagel et al. 2020's objective without the relaxation). Never worse than nearest on the
same grid in that error."""

from __future__ import annotations

from typing import Any

import torch

from cetopt.quant.adaround import gram_flips
from cetopt.quant.quantizers import QuantizerSpec
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

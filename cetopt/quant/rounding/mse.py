"""Round to nearest on the MSE-clipped grid: each (row, group)'s clipping ratio minimises |d|^2 (whatever the
quantiser's own ``clip`` says), so |d|^2 never exceeds nearest's on the full-range grid."""

from __future__ import annotations

from typing import Any

import torch

from cetopt.quant.spec import QuantizerSpec
from cetopt.quant.rounding.base import Rounding, RoundingContext
from cetopt.quant.rounding.grid import Grid, mse_grid


class MseClip(Rounding):
    name = "mse"
    min_bits = 1

    def codes(self, rows: torch.Tensor, bits: int, spec: QuantizerSpec, context: RoundingContext
              ) -> tuple[torch.Tensor, Grid, dict[str, Any]]:
        grid = mse_grid(rows, bits, spec)
        return grid.nearest(rows), grid, {}

    def objective(self, d: torch.Tensor, context: RoundingContext) -> float | None:
        return float((d ** 2).sum())

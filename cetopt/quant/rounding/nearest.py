"""Round to nearest on the quantiser's grid (its clipping setting decides the range)."""

from __future__ import annotations

from typing import Any

import torch

from cetopt.quant.spec import QuantizerSpec
from cetopt.quant.rounding.base import Rounding, RoundingContext
from cetopt.quant.rounding.grid import Grid, spec_grid


class Nearest(Rounding):
    name = "nearest"
    min_bits = 1

    def codes(self, rows: torch.Tensor, bits: int, spec: QuantizerSpec, context: RoundingContext
              ) -> tuple[torch.Tensor, Grid, dict[str, Any]]:
        grid = spec_grid(rows, bits, spec)
        return grid.nearest(rows), grid, {}

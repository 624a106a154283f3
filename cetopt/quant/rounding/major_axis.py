"""Major-axis rounding as a rounding (cetopt.quant.major_axis: the theory's rule, error placed along the
low-curvature axes of the layer's loss quadric, the full loss Hessian block H_ll through its computed
eigenpairs): each weight's floor or ceiling on the grid, at the clipping ratio whose model value is smallest.
Nearest on the full-range grid is the value to beat, so the model value never exceeds nearest's."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from cetopt.quant.major_axis import RATIOS, flip_search_many, model_value
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.quant.rounding.base import QUADRIC, Rounding, RoundingContext
from cetopt.quant.rounding.grid import Grid, make_grid


class MajorAxis(Rounding):
    """Options: ``ratios`` (clipping ratios tried), ``max_rounds`` and ``stall`` (the flip search's stopping
    rules, cetopt.quant.major_axis.flip_search)."""

    name = "major-axis"
    needs = frozenset({QUADRIC})
    use_gradient: ClassVar[bool] = False

    def __init__(self, ratios: Sequence[float] = RATIOS, max_rounds: int = 200, stall: float = 1e-3) -> None:
        self.ratios, self.max_rounds, self.stall = tuple(ratios), max_rounds, stall

    def codes(self, rows: torch.Tensor, bits: int, spec: QuantizerSpec, context: RoundingContext
              ) -> tuple[torch.Tensor, Grid, dict[str, Any]]:
        quadric = context.quadric
        full = make_grid(rows, bits, spec)
        nearest = full.nearest(rows)
        exact = rows.double()
        rtn = model_value((full.values(nearest) - exact).reshape(-1).numpy(), quadric, self.use_gradient)
        grids, starts, others, ds, alts = [], [], [], [], []
        for ratio in self.ratios:  # every clipping ratio searched at once (one slope product per round)
            grid = full if ratio == 1.0 else make_grid(rows, bits, spec, float(ratio))
            floor, ceil = grid.floor_ceil(rows)
            start = grid.nearest(rows)
            other = torch.where(start == floor, ceil, floor)
            grids.append(grid), starts.append(start), others.append(other)
            ds.append((grid.values(start) - exact).reshape(-1).numpy())
            alts.append((grid.values(other) - exact).reshape(-1).numpy())
        moved, values = flip_search_many(np.stack(ds), np.stack(alts), quadric, self.use_gradient,
                                         max_rounds=self.max_rounds, stall=self.stall)
        best: tuple[float, torch.Tensor, Grid, float, int] = (rtn, nearest, full, 1.0, 0)
        for i, ratio in enumerate(self.ratios):
            if values[i] < best[0]:
                flipped = torch.from_numpy(moved[i]).reshape(rows.shape)
                best = (float(values[i]), torch.where(flipped, others[i], starts[i]), grids[i], float(ratio),
                        int(moved[i].sum()))
        value, codes, grid, ratio, flips = best
        return codes, grid, {"ratio": ratio, "flips": flips, "model_nearest": rtn, "model": value}

    def objective(self, d: torch.Tensor, context: RoundingContext) -> float | None:
        return model_value(d.reshape(-1).numpy(), context.quadric, self.use_gradient)


class MajorAxisGradient(MajorAxis):
    """Major-axis rounding with the first-order term g.d in the model (it overfits the calibration gradient when
    every layer uses it at once: docs/results/cet-checks.md)."""

    name = "major-axis-gradient"
    use_gradient = True

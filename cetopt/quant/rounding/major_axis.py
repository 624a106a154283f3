"""Major-axis rounding as a rounding (cetopt.quant.major_axis: the theory's rule, error placed along the
low-curvature axes of the layer's loss quadric, the full loss Hessian block H_ll through its computed
eigenpairs): each weight's floor or ceiling on the grid, at the clipping ratio whose model value is smallest.
Nearest on the full-range grid is the value to beat, so the model value never exceeds nearest's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.quant.major_axis import RATIOS, flip_search_many, model_value
from cetopt.quant.spec import QuantizerSpec
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


@dataclass(frozen=True)
class MajorAxisRounding:
    """Result for one layer and bit-width.

    Attributes:
        weight: the quantised weight (same shape and dtype as the input).
        ratio: the clipping ratio chosen.
        model_rtn, model_major: the model value q(d) of round-to-nearest's error and of the one chosen.
        flips: weights rounded away from nearest.
    """

    weight: torch.Tensor
    ratio: float
    model_rtn: float
    model_major: float
    flips: int


def major_axis_round(weight: torch.Tensor, bits: int, quadric: LayerQuadric, spec: QuantizerSpec = QuantizerSpec(),
                     *, ratios: Sequence[float] = (1.0, 0.95, 0.9, 0.85, 0.8), use_gradient: bool = False,
                     max_rounds: int = 200, stall: float = 1e-3) -> MajorAxisRounding:
    """Quantise ``weight`` to ``bits`` on the quantiser's grid, rounding toward the quadric's major axes.

    Args:
        weight: the layer weight (torch layout); ``quadric`` must be of this layer (n = weight.numel()).
        bits: 2..16 (1-bit sign quantisation has no rounding choice).
        spec: grid layout (symmetric or not, per channel or not); its ``clip`` is replaced by ``ratios``.
        ratios: clipping ratios tried (1 = the full range).
        use_gradient: include g.d in the objective (LLC's first-order term) or only the curvature energy
            (the default: CET's rule; with every layer rounded at once the gradient version overfits the
            calibration gradient, e.g. MNIST-1D ResNet at 4 bits: 24.7% vs 91.6% accuracy).
        max_rounds: most greedy flip rounds per clipping ratio.
        stall: stop a ratio's search when 10 rounds together improved the model value by less than this
            fraction of it (0 runs every round until no single flip improves or ``max_rounds``).
    """
    if not 2 <= bits <= 16:
        raise ProblemError(f"major-axis rounding needs 2..16 bits, got {bits}", field="bits")
    rounding = (MajorAxisGradient if use_gradient else MajorAxis)(ratios, max_rounds, stall)
    out = rounding.round(weight, bits, QuantizerSpec(spec.symmetric, spec.per_channel, group_size=spec.group_size),
                         RoundingContext(quadric=quadric))
    return MajorAxisRounding(weight=out.weight, ratio=out.info["ratio"], model_rtn=out.info["model_nearest"],
                             model_major=out.info["model"], flips=out.info["flips"])

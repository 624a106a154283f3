"""``measured-shrink``: the measured loss change with its first-order part soft-thresholded like ``cet-shrink``'s,

    measured - g.d + sign(g.d) max(|g.d| - z SE, 0).

``measured`` (each layer's candidate swapped in alone, forward passes only) is exact at every order, but its
first-order part g.d is the same calibration noise that ``cet`` chases; ``cet-shrink`` removes that noise but
keeps the second-order model 1/2 d'H_ll d, which underprices large errors (3-bit candidates, where the loss is far
from quadratic). This model keeps the measured remainder measured - g.d (second and higher orders, as observed)
and shrinks only the noisy linear part. It needs no Hessian products: a gradient pass, per-sample gradients for
the standard error, and one forward pass over the calibration data per candidate.
"""

from __future__ import annotations

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals
from cetopt.costmodels.shrink import Z_THRESHOLD, shrunk_linear


class MeasuredShrink(CostModel):
    name = "measured-shrink"
    description = ("measured dL - g.d + soft-threshold(g.d, 3 SE): the higher orders as measured, the gradient term "
                   "only where it beats its noise")
    needs = frozenset({"measured", "linear", "linear_stderr"})
    z = Z_THRESHOLD

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        linear, stderr = shrunk_linear(layer, self.z)
        remainder = layer.require("measured") - layer.require("linear")
        return CostEstimate(loss=remainder + linear, stderr=stderr)

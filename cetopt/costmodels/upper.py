"""``cet-upper``: the pessimistic of two estimates of each candidate's higher-order loss change, plus
``cet-shrink``'s shrunk first-order term,

    sign(g.d) max(|g.d| - z SE, 0) + max(1/2 d'H_ll d, measured - g.d).

The quadratic model underprices large errors where the loss is far from quadratic (3-bit candidates of a
transformer); the measured remainder (each layer's candidate swapped in alone) sees that, but is one noisy
sample of the calibration set and blind to how errors add up across layers. Taking the larger of the two is
an upper-confidence choice: a candidate is cheap only if both say so.
"""

from __future__ import annotations

import numpy as np

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals
from cetopt.costmodels.shrink import Z_THRESHOLD, shrunk_linear


class CetUpper(CostModel):
    name = "cet-upper"
    description = ("soft-threshold(g.d, 3 SE) + max(1/2 d'H_ll d, measured dL - g.d): the larger of the quadratic "
                   "and the measured higher orders")
    needs = frozenset({"linear", "linear_stderr", "quadratic", "measured"})
    z = Z_THRESHOLD

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        linear, stderr = shrunk_linear(layer, self.z)
        higher = np.maximum(0.5 * layer.require("quadratic"), layer.require("measured") - layer.require("linear"))
        return CostEstimate(loss=linear + higher, stderr=stderr)

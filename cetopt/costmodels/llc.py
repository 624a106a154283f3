"""LLC (arXiv 2412.06868): the signed second-order cost inside the lossless neighbourhood. Candidates whose
error leaves the radius 2|g.d^|/kappa are dropped by the builder (``lossless``), and without a size budget the
size is minimised subject to the predicted change <= max_loss."""

from __future__ import annotations

import numpy as np

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals


class Llc(CostModel):
    name = "llc"
    description = "LLC: g.d + 1/2 d'Hd, candidates outside the lossless radius removed, size minimised"
    needs = frozenset({"linear", "quadratic", "lossless_radius"})
    lossless = True

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("linear") + 0.5 * layer.require("quadratic"))

    @staticmethod
    def admissible(layer: LayerSignals) -> np.ndarray:
        """(K,) bool: the candidate's error lies inside the lossless radius."""
        return np.sqrt(layer.energy) <= layer.require("lossless_radius")

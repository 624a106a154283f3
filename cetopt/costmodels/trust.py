"""``cet-trust``: CET's signed cost g.d + 1/2 d'H_ll d, but a negative prediction is believed only inside
LLC's lossless radius (arXiv 2412.06868), where the second-order model says a gain is possible; outside it the
candidate is priced at its curvature-only value 1/2 d'H_ll d >= 0 instead of being taken at face value."""

from __future__ import annotations

import numpy as np

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals


class CetTrust(CostModel):
    name = "cet-trust"
    description = "g.d + 1/2 d'H_ll d, negative values outside LLC's lossless radius clipped to 1/2 d'H_ll d"
    needs = frozenset({"linear", "quadratic", "lossless_radius"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        curvature = 0.5 * layer.require("quadratic")
        signed = layer.require("linear") + curvature
        outside = np.sqrt(layer.energy) > layer.require("lossless_radius")
        return CostEstimate(loss=np.where((signed < 0) & outside, curvature, signed))

"""The empirical-Fisher diagonal cost 1/2 sum_i F_ii d_i^2 (F_ii = mean over calibration samples of
(d loss_s / d w_i)^2), the PSD curvature proxy of Fisher-based sensitivities (e.g. NVIDIA ModelOpt's
AutoQuantize score, torchao's FIT): always >= 0, so no candidate looks spuriously free."""

from __future__ import annotations

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals


class FisherDiagonal(CostModel):
    name = "fisher"
    description = "1/2 sum_i F_ii d_i^2 with F the empirical Fisher diagonal (per-sample gradients)"
    needs = frozenset({"fisher"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=0.5 * layer.require("fisher"))

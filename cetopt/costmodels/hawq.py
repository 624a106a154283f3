"""HAWQ-V3's sensitivity Omega = Tr(H_ll)/n |Q_b(W) - W|^2 (HAWQ ILP.ipynb): no gradient term and no 1/2,
the same ranking as 1/2 x; the classic baseline."""

from __future__ import annotations

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals


class HawqV3(CostModel):
    name = "hawq-v3"
    description = "HAWQ-V3: Tr(H_ll)/n |d|^2 (Hutchinson trace)"
    needs = frozenset({"trace_per_weight"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("trace_per_weight") * layer.energy)

"""``measured``: each candidate's loss change measured directly, by quantising that layer alone and running the
calibration set forward (forward passes only, no curvature model). Exact per layer at every order; blind to
cross-layer effects, and it sees the calibration set's own noise like any single-split estimate."""

from __future__ import annotations

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals


class Measured(CostModel):
    name = "measured"
    description = "calibration loss change measured with each layer's candidate swapped in alone"
    needs = frozenset({"measured"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("measured").copy())

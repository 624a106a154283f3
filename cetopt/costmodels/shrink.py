"""``cet-shrink``: CET's cost with the first-order term soft-thresholded by its standard error,
sign(g.d) max(|g.d| - z SE, 0) + 1/2 d'H_ll d (exact quadratic forms).

g.d from a few hundred calibration samples is mostly noise on a trained model (the optimiser's curse: an exact
solver picks exactly the candidates whose noise came out negative). Soft-thresholding (Donoho & Johnstone 1994)
keeps a gradient gain only by the amount it exceeds z standard errors. z = 3 because the solver takes the most
favourable of L x K candidates: with pure noise the largest |t| of ~250 candidates is about sqrt(2 ln 250) = 3.3,
so at z = 3 almost nothing survives and what does is shrunk to a fraction of its own standard error.
"""

from __future__ import annotations

import numpy as np

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals

Z_THRESHOLD = 3.0


def soft_threshold(value: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """sign(value) max(|value| - threshold, 0), elementwise (threshold >= 0)."""
    return np.sign(value) * np.maximum(np.abs(value) - threshold, 0.0)


def shrunk_linear(layer: LayerSignals, z: float = Z_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """(soft-threshold(g.d, z SE), SE): each candidate's first-order term kept only by what exceeds z standard
    errors, and the standard error itself; both (K,) in loss units."""
    stderr = layer.require("linear_stderr")
    return soft_threshold(layer.require("linear"), z * stderr), np.array(stderr)


class CetShrink(CostModel):
    name = "cet-shrink"
    description = "soft-threshold(g.d, 3 SE) + 1/2 d'H_ll d: the gradient term only where it beats its noise"
    needs = frozenset({"linear", "linear_stderr", "quadratic"})
    z = Z_THRESHOLD

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        linear, stderr = shrunk_linear(layer, self.z)
        return CostEstimate(loss=linear + 0.5 * layer.require("quadratic"), stderr=stderr)

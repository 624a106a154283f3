"""``cet-holdout``: the gradient term estimated on the calibration split and trusted only where the held-out
validation split confirms it (same sign, size within a factor of ``RATIO``); a confirmed term counts at the
smaller of the two magnitudes, an unconfirmed one at zero. The curvature term is exact (1/2 d'H_ll d).

Estimate on one split, check on another: a predicted gain that is noise has an independent sign and size on
the second split, so it is mostly dropped; a real one shows on both.
"""

from __future__ import annotations

import numpy as np

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals

RATIO = 2.0


def confirmed_linear(calibration: np.ndarray, validation: np.ndarray, ratio: float = RATIO) -> np.ndarray:
    """(K,) sign x min(|cal|, |val|) where both splits agree in sign and size (within ``ratio``), else 0."""
    small = np.minimum(np.abs(calibration), np.abs(validation))
    large = np.maximum(np.abs(calibration), np.abs(validation))
    agree = (np.sign(calibration) == np.sign(validation)) & (large <= ratio * small) & (small > 0)
    return np.where(agree, np.sign(calibration) * small, 0.0)


class CetHoldout(CostModel):
    name = "cet-holdout"
    description = "g.d kept where the validation split confirms its sign and size (x2), else 0; + 1/2 d'H_ll d"
    needs = frozenset({"linear", "linear_holdout", "quadratic"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        linear = confirmed_linear(layer.require("linear"), layer.require("linear_holdout"))
        return CostEstimate(loss=linear + 0.5 * layer.require("quadratic"))

"""``cet-upper-monotone``: ``cet-upper``'s costs with one prior added: within a layer, a candidate with a larger
error is never priced below one with a smaller error,

    cost'(k) = max over candidates j of the layer with |d_j|^2 <= |d_k|^2 of cost(j)

(a running maximum in order of error energy |d|^2; the candidate's own cost is among them, so cost' >= cost).

Why: ``cet-upper`` prices a coarse candidate below a fine one of the same layer wherever its soft-thresholded g.d
is negative beyond 3 standard errors on the calibration data. On MobileNetV2, features.17.conv.1.0 costs -0.012 at
3 bits and +0.00001 at 8, so dp takes 3 bits for it even at an 8-bit budget where every layer fits at 8 (CET's
headline walk, docs/results/seeds/cet-headline-mobilenetv2: 87.5% validation agreement at that budget; most of
that loss is MobileNetV2's 8-bit floor, though: every layer at 8 bits keeps 85.7% test agreement). LLC's
premise is that such decreases are real (quantisation noise along -g lowers the loss); this model treats them as
calibration noise instead. Which one holds is measured, not assumed: benchmarks/monotone_costs.py.

Meant for problems with one rounding per bit-width (the default recipe): there a larger error is a coarser grid.
With several roundings per layer (adaround, gptq, major-axis beside nearest) it also forbids a rounding with a
larger error energy to be cheaper than a smaller one, which those roundings contradict by design (they trade
energy for output error): use ``cet-upper`` there.
"""

from __future__ import annotations

import numpy as np

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals
from cetopt.costmodels.upper import CetUpper


def running_max_by(order_key: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(monotone, source)``: each candidate's largest cost among the candidates whose ``order_key`` is at most
    its own (ties in the key share one value), and the index of the candidate that cost comes from. Shapes (K,)."""
    order = np.argsort(order_key, kind="stable")
    monotone = np.empty_like(cost, dtype=np.float64)
    source = np.empty(cost.shape, dtype=np.int64)
    best, best_at, i = -np.inf, -1, 0
    while i < len(order):
        group = [order[i]]  # candidates of equal key take the largest cost among them and below
        while i + len(group) < len(order) and order_key[order[i + len(group)]] == order_key[order[i]]:
            group.append(order[i + len(group)])
        top = max(group, key=lambda k: cost[k])
        if cost[top] > best:
            best, best_at = float(cost[top]), int(top)
        monotone[group], source[group] = best, best_at
        i += len(group)
    return monotone, source


class CetUpperMonotone(CostModel):
    name = "cet-upper-monotone"
    description = ("cet-upper, then no candidate priced below a candidate of the same layer with a smaller error "
                   "|d|^2 (coarse candidates' negative costs taken as calibration noise)")
    needs = CetUpper.needs

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        base = CetUpper().estimate(layer)
        monotone, source = running_max_by(np.asarray(layer.energy, dtype=np.float64),
                                          np.asarray(base.loss, dtype=np.float64))
        stderr = None if base.stderr is None else np.asarray(base.stderr, dtype=np.float64)[source]
        return CostEstimate(loss=monotone, stderr=stderr)

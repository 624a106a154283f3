"""Major-axis rounding: choose each weight's rounding direction (floor or ceiling of its grid cell) and the
clipping scale so that the error d points along the flat (major) axes of the layer's quadric.

Round-to-nearest minimises |d|; CET's conclusion is that, at a given bit-width, the loss is smallest when
d lies along the major axes, i.e. when its curvature energy outside them (the complement) is smallest.
With the layer's model q(d) = [g.d] + 1/2 (rest |d|^2 + sum_i (lambda_i - rest) (u_i.d)^2) over the m
computed eigenpairs, a flip of weight j from one grid neighbour to the other changes d_j by delta_j and q by

    Delta_j = delta_j (g_j + rest d_j + sum_i mu_i z_i u_ij) + 1/2 delta_j^2 (rest + sum_i mu_i u_ij^2),

mu_i = lambda_i - rest, z = U d; all n candidates cost O(nm). Greedy rounds flip the best batch of improving
weights, backtracking when a batch interacts badly, until no single flip improves (a local optimum of
the flip neighbourhood; AdaRound's search space with CET's objective, no training). Every error stays
within one grid step of round-to-nearest's, so |d|_inf <= scale. Each clipping ratio is tried and the
best model value wins: :func:`flip_search_many` searches every ratio in one pass (one (r, m) x (m, n) product
per round; memory a few (r, n) arrays beside U). :func:`cetopt.quant.rounding.major_axis.major_axis_round` rounds a
layer through the registered rounding, whose codes and float32 scales the packed artefact stores.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cetopt.geometry.layer import LayerQuadric


STALL_ROUNDS = 10
RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8)  # clipping ratios tried, the full range first


def model_value(d: np.ndarray, quadric: LayerQuadric, use_gradient: bool = False) -> float:
    """q(d) of the layer's model for the flat error ``d`` (n,): [g.d] + 1/2 (rest |d|^2 + sum_i mu_i (u_i.d)^2)."""
    mu = quadric.eigenvalues - quadric.rest
    return _model(d, quadric.eigenvectors @ d, quadric.gradient if use_gradient else None, quadric.rest, mu)


def flip_search_many(d: np.ndarray, alt: np.ndarray, quadric: LayerQuadric, use_gradient: bool = False, *,
                     max_rounds: int = 200, stall: float = 1e-3, curvature: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_greedy_flips` on r problems of one layer at once (the clipping ratios): ``d``, ``alt`` (r, n).

    Each round prices every weight of every still-searching problem with one (r, m) x (m, n) product (the
    slopes) and elementwise passes over (r, n); each problem then takes its own batch exactly as
    :func:`_greedy_flips` does (argpartition, batch priced in O(batch x m), quartered when it does not improve,
    doubled when it does, STALL_ROUNDS stall rule). Memory: a few (r, n) arrays beside U (m, n). ``curvature``
    (n,): rest + sum_i mu_i u_ij^2, computed once per layer when not given.

    Returns:
        (bool (r, n): weights ending on their other neighbour, (r,) model values reached).
    """
    u, rest = quadric.eigenvectors, quadric.rest
    mu = quadric.eigenvalues - rest
    g = quadric.gradient if use_gradient else None
    if curvature is None:
        curvature = rest + mu @ u ** 2
    start = np.array(d, dtype=np.float64, copy=True)
    d, alt = start.copy(), np.array(alt, dtype=np.float64, copy=True)
    r, n = d.shape
    z = d @ u.T                                                     # (r, m)
    values = np.array([_model(d[i], z[i], g, rest, mu) for i in range(r)])
    widest = max(1, n // 50)
    batch = np.full(r, widest)
    history = [[v] for v in values]
    active = np.ones(r, dtype=bool)
    terms = _Terms(u, rest, mu, g)
    for _ in range(max_rounds):
        _stop_stalled(active, history, values, stall)
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        delta = alt[rows] - d[rows]
        slope = (mu * z[rows]) @ u                                 # the one O(r n m) product of the round
        slope += rest * d[rows]
        if g is not None:
            slope += g
        gain = np.multiply(delta, curvature)                        # gain = delta (slope + delta curvature / 2),
        gain *= 0.5                                                 # in place: (r, n) temporaries bound memory
        gain += slope
        gain *= delta
        for k, i in enumerate(rows):
            improving = np.flatnonzero(gain[k] < -1e-15 * max(abs(values[i]), 1e-30))
            if improving.size == 0:
                active[i] = False
                continue
            take, dz, change, size = _price_batch(terms, d[i], z[i], delta[k], gain[k], improving, int(batch[i]))
            if change >= 0:
                active[i] = False
                continue
            alt[i, take], d[i, take] = d[i, take], alt[i, take]
            z[i] += dz
            values[i] += change
            batch[i] = min(widest, 2 * size)
            history[i].append(values[i])
    final = np.array([_model(d[i], u @ d[i], g, rest, mu) for i in range(r)])
    return d != start, final


class _Terms(NamedTuple):
    """A layer's quadratic model: eigenvectors ``u`` (m, n), ``rest`` (the curvature off them), ``mu`` (m,) the
    eigenvalues less ``rest``, and the gradient ``g`` (n,) or None."""

    u: np.ndarray
    rest: float
    mu: np.ndarray
    g: np.ndarray | None


def _stop_stalled(active: np.ndarray, history: list[list[float]], values: np.ndarray, stall: float) -> None:
    """Mark inactive each problem whose value fell by at most ``stall`` (relative) over the last STALL_ROUNDS."""
    for i in np.flatnonzero(active):
        h = history[i]
        if len(h) > STALL_ROUNDS and h[-STALL_ROUNDS - 1] - values[i] <= stall * abs(values[i]):
            active[i] = False


def _price_batch(terms: _Terms, d: np.ndarray, z: np.ndarray, delta: np.ndarray, gain: np.ndarray,
                 improving: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """One problem's batch of flips: the ``width`` weights of least ``gain`` among ``improving``, priced exactly in
    O(batch x m); the width is quartered until the batch lowers the model or is one weight. ``d``, ``delta``,
    ``gain`` (n,) and ``z`` = U d (m,) are the problem's rows. Returns (the weights taken, their change of z (m,),
    the model's change, the batch size)."""
    u, rest, mu, g = terms
    while True:
        size = min(width, improving.size)
        take = improving if size == improving.size else \
            improving[np.argpartition(gain[improving], size - 1)[:size]]
        step = delta[take]
        dz = u[:, take] @ step
        change = rest * (float(d[take] @ step) + 0.5 * float(step @ step)) + float(mu @ (z * dz + 0.5 * dz ** 2))
        if g is not None:
            change += float(g[take] @ step)
        if change < 0 or size == 1:
            return take, dz, change, size
        width = max(1, size // 4)


def flip_search(d: np.ndarray, alt: np.ndarray, quadric: LayerQuadric, use_gradient: bool = False, *,
                max_rounds: int = 200, stall: float = 1e-3) -> tuple[np.ndarray, float]:
    """Greedy flips from ``d`` toward ``alt`` ((n,) errors of each weight's two grid neighbours): (bool mask of
    the weights that end on their other neighbour, the model value reached)."""
    mu = quadric.eigenvalues - quadric.rest
    curvature = quadric.rest + mu @ quadric.eigenvectors ** 2
    final, value, _ = _greedy_flips(d, alt, quadric, use_gradient, max_rounds, curvature, stall)
    return final != d, value


def _model(d: np.ndarray, z: np.ndarray, g: np.ndarray | None, rest: float, mu: np.ndarray) -> float:
    linear = float(g @ d) if g is not None else 0.0
    return linear + 0.5 * (rest * float(d @ d) + float(mu @ z ** 2))


def _greedy_flips(d: np.ndarray, alt: np.ndarray, quadric: LayerQuadric, use_gradient: bool, max_rounds: int,
                  curvature: np.ndarray, stall: float) -> tuple[np.ndarray, float, int]:
    """Greedy rounds of flips from ``d`` toward ``alt`` (both (n,), the two grid neighbours' errors).

    A round takes the ``batch`` most improving single flips (argpartition, O(n)) and prices the batch
    exactly in O(batch x m): flips of different weights interact only through z = U d. A batch that
    does not improve is cut to a quarter; one that does lets the next round take twice as many, so a
    large layer is not left flipping one weight per O(nm) round. ``curvature`` is (n,) rest + sum_i mu_i
    u_ij^2, the diagonal of the model's Hessian. The search stops early when STALL_ROUNDS rounds together
    improved the model by less than ``stall`` x |q| (on a 590k-weight layer, 99.9% of the 200-round gain
    comes in the first 10 to 25 rounds).
    """
    u, rest = quadric.eigenvectors, quadric.rest
    mu = quadric.eigenvalues - rest
    g = quadric.gradient if use_gradient else None
    terms = _Terms(u, rest, mu, g)
    d, alt = d.copy(), alt.copy()
    z = u @ d
    value = _model(d, z, g, rest, mu)
    widest = max(1, d.size // 50)
    batch = widest
    flips = 0
    history = [value]
    for _ in range(max_rounds):
        if len(history) > STALL_ROUNDS and history[-STALL_ROUNDS - 1] - value <= stall * abs(value):
            break
        delta = alt - d
        slope = rest * d + (mu * z) @ u
        if g is not None:
            slope += g
        gain = delta * (slope + 0.5 * delta * curvature)
        improving = np.flatnonzero(gain < -1e-15 * max(abs(value), 1e-30))
        if improving.size == 0:
            break
        take, dz, change, size = _price_batch(terms, d, z, delta, gain, improving, batch)
        if change >= 0:
            break
        alt[take], d[take] = d[take], alt[take]
        z += dz
        value += change
        flips += int(take.size)
        batch = min(widest, 2 * size)
        history.append(value)
    return d, _model(d, u @ d, g, rest, mu), flips



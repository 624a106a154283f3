"""Per-group efficient frontiers (lower convex hulls) and the LP relaxation of the grouped knapsack.

For one resource r and loss l, the LP relaxation of the multiple-choice knapsack

    min sum_g l[g, o_g]  s.t.  sum_g r[g, o_g] <= R,  one option per group

is solved exactly by walking the groups' lower convex hulls in order of loss increase per unit of
resource saved (Sinha & Zoltners 1979): every group sits at a hull vertex except at most one, which is
split between two adjacent vertices. The walk's integer prefix is the greedy answer; the fractional
step gives a certified lower bound; the split segment's slope is the Lagrange multiplier.
Everything is vectorised over groups: a (G, K) padded layout, K = most options in any group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def lower_hulls(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Efficient frontier of each row's points: resource ``x`` ascending, loss ``y`` strictly descending,
    convex (each step buys less loss reduction per unit of resource than the one before).

    Args:
        x, y: (G, K) arrays; padded entries have x = +inf.

    Returns:
        hull: (G, K) int array of column indices into x/y, sorted by x ascending, padded with -1.
        length: (G,) number of hull vertices per row (>= 1 for any row with a finite entry).
    """
    rows, width = x.shape
    order = np.lexsort((y, x), axis=1)
    xs = np.take_along_axis(x, order, axis=1)
    ys = np.take_along_axis(y, order, axis=1)
    stack = np.full((rows, width), -1, dtype=np.int64)  # positions into the sorted arrays
    length = np.zeros(rows, dtype=np.int64)
    all_rows = np.arange(rows)
    for j in range(width):
        px, py = xs[:, j], ys[:, j]
        top = stack[all_rows, np.maximum(length - 1, 0)]
        top_y = np.where(length > 0, ys[all_rows, np.maximum(top, 0)], np.inf)
        push = np.isfinite(px) & (py < top_y)
        while True:
            rows_pop = push & (length >= 2)
            if not rows_pop.any():
                break
            idx = np.flatnonzero(rows_pop)
            a = stack[idx, length[idx] - 2]
            b = stack[idx, length[idx] - 1]
            xa, ya, xb, yb = xs[idx, a], ys[idx, a], xs[idx, b], ys[idx, b]
            # b is not a strict convex vertex if it lies on or above the chord from a to the new point
            above = (yb - ya) * (px[idx] - xa) >= (py[idx] - ya) * (xb - xa)
            if not above.any():
                break
            length[idx[above]] -= 1
        idx = np.flatnonzero(push)
        stack[idx, length[idx]] = j
        length[idx] += 1
    hull = np.where(stack >= 0, np.take_along_axis(order, np.maximum(stack, 0), axis=1), -1)
    return hull, length


@dataclass(frozen=True)
class HullWalk:
    """The sequence of hull steps of all groups, ordered from the most precise end downwards.

    Attributes:
        hull, length: per-group hull vertices (see :func:`lower_hulls`).
        group: (M,) group of each step.
        position: (M,) hull position the step moves *to* (from position + 1).
        d_resource: (M,) resource saved by the step (> 0).
        d_loss: (M,) loss added by the step (> 0).
        top_resource, top_loss: totals with every group at its last hull vertex (least loss).
    """

    hull: np.ndarray
    length: np.ndarray
    group: np.ndarray
    position: np.ndarray
    d_resource: np.ndarray
    d_loss: np.ndarray
    top_resource: float
    top_loss: float

    @property
    def slope(self) -> np.ndarray:
        """Loss added per unit of resource saved, per step (non-decreasing along the walk)."""
        return self.d_loss / self.d_resource

    def option_after(self, steps: int) -> np.ndarray:
        """Option index of each group after taking the first ``steps`` steps of the walk."""
        taken = np.bincount(self.group[:steps], minlength=self.hull.shape[0])
        pos = self.length - 1 - taken
        return self.hull[np.arange(self.hull.shape[0]), pos]


CHUNK_ROWS = 1 << 16  # rows per block of the (G, K) temporaries: at 10^6 groups they were most of dp's memory


def _steps(resource: np.ndarray, loss: np.ndarray, hull: np.ndarray, length: np.ndarray,
           first_row: int) -> tuple[np.ndarray, ...]:
    """(group, position, d_resource, d_loss) of the hull steps of one block of rows."""
    n, width = hull.shape
    # step t of group g goes from hull position t+1 to t (t = length-2 ... 0); listed deepest first, so the
    # steps come out ordered by (group, -position), the walk's tie order
    pos = np.broadcast_to(np.arange(width - 2, -1, -1), (n, width - 1))
    valid = pos < (length - 1)[:, None]
    hi = np.maximum(np.take_along_axis(hull, np.minimum(pos + 1, width - 1), axis=1), 0)
    lo = np.maximum(np.take_along_axis(hull, pos, axis=1), 0)
    d_res = (np.take_along_axis(resource, hi, axis=1) - np.take_along_axis(resource, lo, axis=1))[valid]
    d_loss = (np.take_along_axis(loss, lo, axis=1) - np.take_along_axis(loss, hi, axis=1))[valid]
    groups = np.broadcast_to(np.arange(first_row, first_row + n)[:, None], pos.shape)[valid]
    return groups, pos[valid], d_res, d_loss


def hull_walk(resource: np.ndarray, loss: np.ndarray) -> HullWalk:
    """Build the global downward walk over all groups' hulls, ordered by slope (ties: group, then depth)."""
    rows = resource.shape[0]
    hulls, lengths, parts = [], [], []
    for lo in range(0, max(rows, 1), CHUNK_ROWS):  # the same answer as one block, in bounded memory
        block_r, block_l = resource[lo:lo + CHUNK_ROWS], loss[lo:lo + CHUNK_ROWS]
        hull, length = lower_hulls(block_r, block_l)
        hulls.append(hull)
        lengths.append(length)
        parts.append(_steps(block_r, block_l, hull, length, lo))
    hull, length = np.concatenate(hulls), np.concatenate(lengths)
    del hulls, lengths
    groups, positions, d_res, d_loss = (np.concatenate(column) for column in zip(*parts))
    del parts
    # by slope, ties in (group, -position) order: a stable sort of steps listed in that order (one key; a 3-key
    # lexsort would sort three times)
    order = np.argsort(d_loss / d_res, kind="stable")
    all_rows = np.arange(rows)
    top = hull[all_rows, length - 1]
    return HullWalk(
        hull=hull, length=length, group=groups[order], position=positions[order], d_resource=d_res[order],
        d_loss=d_loss[order], top_resource=float(resource[all_rows, top].sum()),
        top_loss=float(loss[all_rows, top].sum()),
    )


@dataclass(frozen=True)
class LpSolution:
    """The LP relaxation of the single-resource grouped knapsack (min loss s.t. resource <= limit).

    Attributes:
        feasible: False when even the least-resource hull vertices exceed the limit.
        steps: number of whole walk steps in the greedy integer answer (the first that fits).
        bound: the LP optimum, a lower bound on the integer optimum.
        multiplier: the split step's slope (loss per unit resource), 0 when the top fits.
        choice_index: the greedy integer option per group after ``steps`` steps.
    """

    feasible: bool
    steps: int
    bound: float
    multiplier: float
    choice_index: np.ndarray


def solve_lp(walk: HullWalk, limit: float) -> LpSolution:
    """Walk down until the resource total is within ``limit``; the partial last step gives the bound."""
    totals = walk.top_resource - np.concatenate(([0.0], np.cumsum(walk.d_resource)))
    tol = 1e-12 * max(1.0, abs(limit))
    fits = np.flatnonzero(totals <= limit + tol)
    if fits.size == 0:
        return LpSolution(False, len(walk.group), np.inf, np.inf, walk.option_after(len(walk.group)))
    steps = int(fits[0])
    losses = walk.top_loss + np.concatenate(([0.0], np.cumsum(walk.d_loss)))
    if steps == 0:
        return LpSolution(True, 0, walk.top_loss, 0.0, walk.option_after(0))
    frac = (totals[steps - 1] - limit) / walk.d_resource[steps - 1]
    bound = losses[steps - 1] + frac * walk.d_loss[steps - 1]
    return LpSolution(True, steps, float(bound), float(walk.slope[steps - 1]), walk.option_after(steps))


def solve_lp_dual(walk: HullWalk, max_loss: float) -> LpSolution:
    """The mirrored LP: min resource s.t. loss <= max_loss, walking *up* from the least-resource end.

    ``bound`` is then a lower bound on the resource and ``multiplier`` the resource saved per unit loss
    at the split (1 / slope).
    """
    m = len(walk.group)
    bottom_res = walk.top_resource - float(walk.d_resource.sum())
    bottom_loss = walk.top_loss + float(walk.d_loss.sum())
    # walking up = taking the walk's steps in reverse order, each one removing d_loss and adding d_resource
    up_loss = bottom_loss - np.concatenate(([0.0], np.cumsum(walk.d_loss[::-1])))
    up_res = bottom_res + np.concatenate(([0.0], np.cumsum(walk.d_resource[::-1])))
    tol = 1e-12 * max(1.0, abs(max_loss))
    fits = np.flatnonzero(up_loss <= max_loss + tol)
    if fits.size == 0:
        return LpSolution(False, 0, np.inf, np.inf, walk.option_after(m))
    k = int(fits[0])
    if k == 0:
        return LpSolution(True, m, bottom_res, 0.0, walk.option_after(m))
    step = m - k  # index (in walk order) of the last upward step taken
    frac = (up_loss[k - 1] - max_loss) / walk.d_loss[step]
    bound = up_res[k - 1] + frac * walk.d_resource[step]
    return LpSolution(True, m - k, float(bound), float(1.0 / walk.slope[step]), walk.option_after(m - k))

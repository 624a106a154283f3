"""Shrink a compiled problem before an exact engine sees it, keeping every optimal allocation.

Three valid reductions, in this order (each keeps every allocation at least as good as the incumbent):

1. Lagrangian reduced-cost fixing. With a multiplier lambda >= 0 on one constraint sum q <= Q, every
   feasible allocation x costs f(x) >= L + sum_g rc_g(x_g), where rc_g(o) = (p + lambda q)[g, o] -
   min_o (p + lambda q)[g, o] >= 0 and L = sum_g min_o (p + lambda q) - lambda Q (+ the interaction
   floor). An allocation no worse than the incumbent U therefore uses only options with rc <= U - L.
   lambda is the LP multiplier of the greedy hull walk, so L is the LP (hull) bound.
2. Resource fixing: an option whose resource alone, with every other group at its least, breaks a
   budget can never be used (this is what removes a choice of 1e15 bits).
3. Dominance: in a group without interaction terms, an option that is no better in the objective and in
   every constrained quantity than another option of the same group is dropped.

A budget that the kept options cannot exceed is then dropped (a size limit of 1e308 is no row at all).
Outlier losses (1e9 next to 1e-11) leave with step 1, so what the engines see spans a narrow range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cetopt.problem.compiled import CompiledProblem, Group, PairTerm
from cetopt.problem.model import Minimize
from cetopt.solvers.incumbent import Incumbent, pair_floor, resource_tables


@dataclass(frozen=True)
class Reduction:
    """A compiled problem restricted to the options that can still be optimal.

    Attributes:
        compiled: the restricted problem (same groups, fewer options; limits that cannot bind dropped).
        keep: per group, the original option index of each kept option.
        lower: the Lagrangian (LP) lower bound L, compiled units (-inf when none).
        incumbent: the incumbent in restricted indices, or None when there is none.
        dropped: how many options were removed.
        reduced_cost: per group, the Lagrangian reduced cost of each kept option (None when not computed).
        gap: incumbent value minus ``lower`` (inf without an incumbent): every allocation no worse than the
            incumbent has reduced costs summing to at most this.
    """

    compiled: CompiledProblem
    keep: tuple[np.ndarray, ...]
    lower: float
    incumbent: np.ndarray | None
    dropped: int
    reduced_cost: tuple[np.ndarray, ...] | None = None
    gap: float = float("inf")

    def lift(self, choice_index: np.ndarray) -> np.ndarray:
        """Map restricted option indices back to the original problem's."""
        return np.array([k[int(o)] for k, o in zip(self.keep, choice_index)], dtype=np.int64)


def _lagrangian(compiled: CompiledProblem, incumbent: Incumbent) -> tuple[np.ndarray, float]:
    """((G, K) reduced costs, padded with +inf; the Lagrangian bound L)."""
    loss = compiled.padded("loss", np.inf)
    floor = pair_floor(compiled)
    lam = incumbent.plan.multiplier
    lam = float(lam) if lam is not None and np.isfinite(lam) and lam > 0 else 0.0
    if compiled.minimize is Minimize.SIZE:
        size = compiled.padded("size", np.inf)
        if compiled.max_loss is None or lam == 0.0:
            return size - size.min(axis=1, keepdims=True), float(size.min(axis=1).sum())
        value = size + lam * loss
        low = value.min(axis=1, keepdims=True)
        return value - low, float(low.sum()) - lam * (compiled.max_loss - floor)
    tables = resource_tables(compiled)
    if len(tables) == 1 and lam > 0.0:
        _, limit, table = tables[0]
        value = loss + lam * table
        low = value.min(axis=1, keepdims=True)
        return value - low, float(low.sum()) - lam * limit + floor
    low = loss.min(axis=1, keepdims=True)
    return loss - low, float(low.sum()) + floor


def _quantities(compiled: CompiledProblem) -> list[tuple[np.ndarray, float | None]]:
    """(G, K) table and compiled limit of every quantity the problem constrains or minimises."""
    out: list[tuple[np.ndarray, float | None]] = [(compiled.padded("loss", np.inf), None),
                                                   (compiled.padded("size", np.inf), compiled.max_size)]
    if compiled.max_loss is not None:
        out[0] = (out[0][0], compiled.max_loss - pair_floor(compiled))
    if compiled.max_bops is not None:
        out.append((compiled.padded("bops", np.inf), compiled.max_bops))
    return out


def _tol(*values: float) -> float:
    finite = [abs(v) for v in values if np.isfinite(v)]
    return 1e-9 * max(finite, default=0.0) + 1e-300


def _dominated(tables: list[np.ndarray], protected: np.ndarray) -> np.ndarray:
    """(G, K): option o is no better than some other option of its group in every table."""
    stack = np.stack(tables, axis=-1)  # (G, K, m)
    no_worse = np.all(stack[:, :, None, :] <= stack[:, None, :, :], axis=-1)  # [g, o', o]: o' <= o everywhere
    better = np.any(stack[:, :, None, :] < stack[:, None, :, :], axis=-1)
    k = stack.shape[1]
    earlier = np.arange(k)[:, None] < np.arange(k)[None, :]  # o' < o (ties keep the first)
    beats = no_worse & (better | earlier[None]) & ~np.eye(k, dtype=bool)[None]
    return beats.any(axis=1) & ~protected


def reduce_problem(compiled: CompiledProblem, incumbent: Incumbent) -> Reduction:
    """Apply the reductions of the module docstring, given a (possibly infeasible) incumbent."""
    rc, lower = _lagrangian(compiled, incumbent)
    valid = np.isfinite(compiled.padded("size", np.inf))
    keep = valid.copy()
    upper = incumbent.objective if incumbent.feasible else np.inf
    if np.isfinite(upper):
        keep &= rc <= (upper - lower) + _tol(upper, lower, float(np.nanmax(np.where(valid, rc, np.nan))))
    for table, limit in _quantities(compiled):
        if limit is None:
            continue
        low = np.where(valid, table, np.inf).min(axis=1)
        room = limit - float(low.sum())
        keep &= (table - low[:, None]) <= room + _tol(limit, float(low.sum()))
    paired = np.zeros(compiled.n_groups, dtype=bool)
    for pair in compiled.pairs:
        paired[[pair.a, pair.b]] = True
    protected = np.zeros_like(keep)
    rows = np.arange(compiled.n_groups)
    if incumbent.feasible:
        protected[rows, incumbent.choice_index] = True
    objective = [t for t, _ in _quantities(compiled)]
    tables = [np.where(keep, t, np.inf) for t in objective]
    keep &= ~(_dominated(tables, protected) & ~paired[:, None])
    keep |= protected  # the incumbent stays representable
    reduction = _restrict(compiled, keep, lower, incumbent if incumbent.feasible else None)
    costs = tuple(row[k] for row, k in zip(rc, reduction.keep))
    return dataclasses.replace(reduction, reduced_cost=costs, gap=float(upper - lower))


def _restrict(compiled: CompiledProblem, keep: np.ndarray, lower: float, incumbent: Incumbent | None) -> Reduction:
    if not keep.any(axis=1).all():
        keep = keep | ~keep.any(axis=1, keepdims=True) & np.isfinite(compiled.padded("size", np.inf))
    kept = tuple(np.flatnonzero(row) for row in keep)
    groups = tuple(
        Group(members=g.members, options=g.options[k], loss=g.loss[k], size=g.size[k],
              bops=None if g.bops is None else g.bops[k]) for g, k in zip(compiled.groups, kept))
    pairs = tuple(PairTerm(a=p.a, b=p.b, matrix=p.matrix[np.ix_(kept[p.a], kept[p.b])]) for p in compiled.pairs)
    restricted = dataclasses.replace(compiled, groups=groups, pairs=pairs)
    restricted = dataclasses.replace(restricted, **_binding_limits(restricted))
    mapped = None
    if incumbent is not None:
        position = [np.searchsorted(k, o) for k, o in zip(kept, incumbent.choice_index)]
        mapped = np.array(position, dtype=np.int64)
    dropped = int(sum(g.n_options for g in compiled.groups) - sum(len(k) for k in kept))
    return Reduction(restricted, kept, lower, mapped, dropped)


def _binding_limits(compiled: CompiledProblem) -> dict[str, float | None]:
    """Limits that the restricted options cannot reach are set to None (no row for an engine)."""
    changes: dict[str, float | None] = {}
    if compiled.max_size is not None and compiled.padded("size", -np.inf).max(axis=1).sum() <= compiled.max_size:
        changes["max_size"] = None
    if compiled.max_bops is not None and compiled.padded("bops", -np.inf).max(axis=1).sum() <= compiled.max_bops:
        changes["max_bops"] = None
    if compiled.max_loss is not None:
        top = compiled.padded("loss", -np.inf).max(axis=1).sum() + sum(p.matrix.max() for p in compiled.pairs)
        if top <= compiled.max_loss:
            changes["max_loss"] = None
    return changes


def lp_hull(reduction: Reduction) -> Reduction | None:
    """For the LP relaxation only: keep each group's lower convex hull in the (constrained quantity,
    objective) plane. With one constraint row and no interaction terms the LP optimum lies on these
    vertices (Sinha & Zoltners 1979), so the LP value is unchanged; an integer solver must not use this.
    Returns None when the problem has interactions or more than one constraint row."""
    from cetopt.solvers.hull import lower_hulls

    compiled = reduction.compiled
    rows = [t for t, limit in _quantities(compiled) if limit is not None]
    if compiled.pairs or len(rows) > 1:
        return None
    objective = compiled.padded("size" if compiled.minimize is Minimize.SIZE else "loss", np.inf)
    if not rows:
        keep = objective == objective.min(axis=1, keepdims=True)
    else:
        hull, length = lower_hulls(rows[0], objective)
        keep = np.zeros(objective.shape, dtype=bool)
        g, k = np.nonzero(np.arange(hull.shape[1])[None, :] < length[:, None])
        keep[g, hull[g, k]] = True
    inner = _restrict(compiled, keep, reduction.lower, None)
    keep_outer = tuple(outer[k] for outer, k in zip(reduction.keep, inner.keep))
    return Reduction(inner.compiled, keep_outer, reduction.lower, None, reduction.dropped + inner.dropped)

"""Pieces every backend shares: the greedy hull-walk plan (an incumbent and an LP bound), the incumbent
polished by single-group moves, and what a backend returns when its time limit struck first.

The walk itself lives in :mod:`cetopt.solvers.hull`; the greedy *backend* in :mod:`cetopt.solvers.greedy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize
from cetopt.solvers.hull import hull_walk, solve_lp, solve_lp_dual
from cetopt.solvers.local_search import improve, is_feasible


@dataclass(frozen=True)
class GreedyPlan:
    """The hull walk's answer before local moves.

    Attributes:
        choice_index: one option per group (may violate budgets the walk does not see, e.g. a second one).
        bound: a proven lower bound on the objective (compiled units), or None.
        multiplier: Lagrange multiplier of the walked constraint (loss per unit resource, or the inverse
            for minimize-size), or None when several resources were combined.
        resource: the walked resource ("size", "bops", "loss" for minimize-size, or "combined").
        infeasible: True only when the walk proves that no allocation exists.
    """

    choice_index: np.ndarray
    bound: float | None
    multiplier: float | None
    resource: str
    infeasible: bool


def pair_floor(compiled: CompiledProblem) -> float:
    """The smallest total the interaction terms can take (sum of each matrix's minimum)."""
    return float(sum(p.matrix.min() for p in compiled.pairs))


def _tiebreak_min(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    order = np.lexsort((secondary, primary), axis=1)
    return order[:, 0]


def resource_tables(compiled: CompiledProblem) -> list[tuple[str, float, np.ndarray]]:
    """(name, limit, (G, K) table padded with +inf) for every resource budget that is set."""
    out = []
    for name, limit, _ in compiled.resources():
        out.append((name, limit, compiled.padded(name, np.inf)))
    return out


def greedy_plan(compiled: CompiledProblem) -> GreedyPlan:
    """Run the hull walk for ``compiled`` (see :mod:`cetopt.solvers.greedy`)."""
    loss = compiled.padded("loss", np.inf)
    size = compiled.padded("size", np.inf)
    floor = pair_floor(compiled)
    if compiled.minimize is Minimize.SIZE:
        if compiled.max_loss is None:
            option = _tiebreak_min(size, loss)
            return GreedyPlan(option, float(size[np.arange(len(option)), option].sum()), 0.0, "loss", False)
        lp = solve_lp_dual(hull_walk(size, loss), compiled.max_loss - floor)
        return GreedyPlan(lp.choice_index, lp.bound if lp.feasible else None, lp.multiplier, "loss",
                          infeasible=not lp.feasible)
    tables = resource_tables(compiled)
    if not tables:
        option = _tiebreak_min(loss, size)
        bound = None if compiled.pairs else float(loss[np.arange(len(option)), option].sum())
        return GreedyPlan(option, bound, 0.0, "none", False)
    if len(tables) == 1:
        name, limit, table = tables[0]
        lp = solve_lp(hull_walk(table, loss), limit)
        bound = lp.bound + floor if lp.feasible else None
        return GreedyPlan(lp.choice_index, bound, lp.multiplier, name, infeasible=not lp.feasible)
    return _combined_plan(compiled, tables, loss, floor)


def _combined_plan(compiled: CompiledProblem, tables: list[tuple[str, float, np.ndarray]], loss: np.ndarray,
                   floor: float) -> GreedyPlan:
    """Several resources: walk a normalised sum, stop at the first prefix where every budget holds; the
    bound is the best single-resource LP bound."""
    combined = sum(t / limit for _, limit, t in tables)
    walk = hull_walk(combined, loss)
    rows, steps = walk.group, walk.position
    hi = walk.hull[rows, steps + 1]
    lo = walk.hull[rows, steps]
    groups = np.arange(len(walk.length))
    ok = np.ones(len(rows) + 1, dtype=bool)
    for _, limit, table in tables:
        top = float(table[groups, walk.hull[groups, walk.length - 1]].sum())
        totals = top - np.concatenate(([0.0], np.cumsum(table[rows, hi] - table[rows, lo])))
        ok &= totals <= limit + 1e-12 * max(1.0, limit)
    hits = np.flatnonzero(ok)
    option = walk.option_after(int(hits[0]) if hits.size else len(rows))
    bounds = [solve_lp(hull_walk(t, loss), limit) for _, limit, t in tables]
    infeasible = any(not b.feasible for b in bounds)
    bound = None if infeasible else max(b.bound for b in bounds) + floor
    return GreedyPlan(option, bound, None, "combined", infeasible)


@dataclass(frozen=True)
class Incumbent:
    """The greedy plan improved by single-group moves.

    Attributes:
        plan: the hull walk it started from (its bound and multiplier).
        choice_index: the improved allocation, one option per group.
        feasible: whether it meets every budget.
        objective: its objective in compiled units (inf when infeasible).
    """

    plan: GreedyPlan
    choice_index: np.ndarray
    feasible: bool
    objective: float


def greedy_incumbent(compiled: CompiledProblem) -> Incumbent:
    """The greedy walk + single-group moves: the incumbent every exact backend starts from."""
    plan = greedy_plan(compiled)
    option = improve(compiled, plan.choice_index)
    feasible = not plan.infeasible and is_feasible(compiled, option)
    objective = compiled.objective_values(option)[0] if feasible else float("inf")
    return Incumbent(plan, option, feasible, objective)


def reference_objective(compiled: CompiledProblem) -> float:
    """The greedy answer's objective: the scale a MILP objective is normalised to."""
    return compiled.objective_values(improve(compiled, greedy_plan(compiled).choice_index))[0]

"""Exact dynamic programming over the grouped knapsack, with Lagrangian reduced-cost fixing.

1. The greedy hull walk gives a feasible incumbent U and the LP multiplier lambda.
2. Reduced-cost fixing: any allocation costs at least L(lambda) + sum of its options' reduced costs,
   where L(lambda) = sum_g min_o (p + lambda q) - lambda Q is the Lagrangian dual bound. An option whose
   reduced cost exceeds U - L(lambda) can be in no allocation better than U, so it is dropped. On real
   problems this fixes almost every layer.
3. An exact Pareto-frontier DP (states: (constraint used, objective), dominated states pruned, states
   that cannot fit or cannot beat U pruned) over the groups that still have a choice.

p is the objective (loss, or size when minimising size) and q the one constrained quantity (a size or
BOPs budget, or the loss bound when minimising size). Sizes are exact integers in float64 (< 2^53).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.greedy import greedy_plan
from cetopt.solvers.local_search import improve
from cetopt.solvers.result import Outcome, Status


@dataclass(frozen=True)
class DPOptions:
    """Options of the dp backend.

    Attributes:
        max_states: largest Pareto frontier allowed; beyond it the greedy incumbent is returned as
            FEASIBLE with its LP bound (limit = "states").
        reduce: apply Lagrangian reduced-cost fixing before the DP.
    """

    max_states: int = 2_000_000
    reduce: bool = True


def _axes(compiled: CompiledProblem) -> tuple[list[np.ndarray], list[np.ndarray], float, float]:
    """(p per group, q per group, cap on q, cap on p)."""
    inf = float("inf")
    if compiled.minimize is Minimize.SIZE:
        p = [g.size for g in compiled.groups]
        q = [g.loss for g in compiled.groups]
        q_cap = compiled.max_loss if compiled.max_loss is not None else inf
        p_cap = compiled.max_size if compiled.max_size is not None else inf
        return p, q, q_cap, p_cap
    resources = compiled.resources()
    p = [g.loss for g in compiled.groups]
    p_cap = compiled.max_loss if compiled.max_loss is not None else inf
    if not resources:
        return p, [np.zeros_like(g.loss) for g in compiled.groups], inf, p_cap
    _, limit, per_group = resources[0]
    return p, [np.asarray(v, dtype=np.float64) for v in per_group], limit, p_cap


def _tol(value: float) -> float:
    return 1e-9 * max(1.0, abs(value)) if np.isfinite(value) else 0.0


class DPSolver(Solver):
    """Exact DP with reduced-cost fixing; the reference for tests, and fast on real problems."""

    name = "dp"
    description = "exact Pareto DP after Lagrangian reduced-cost fixing"
    capabilities = Capabilities(exact=True, proves_bound=True, interactions=False, max_resources=1)
    Options = DPOptions

    def unsupported(self, compiled: CompiledProblem) -> list[str]:
        reasons = super().unsupported(compiled)
        if compiled.minimize is Minimize.SIZE and compiled.max_bops is not None:
            reasons.append("it minimises size under a loss bound but cannot also hold a bops budget "
                           "(a second DP dimension); use ortools or highs")
        return reasons

    def run(self, compiled: CompiledProblem, options: DPOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        start = time.perf_counter()
        plan = greedy_plan(compiled)
        if plan.infeasible:
            return Outcome(Status.INFEASIBLE, message="the LP relaxation is infeasible")
        p, q, q_cap, p_cap = _axes(compiled)
        incumbent = improve(compiled, plan.option)
        inc_p = float(sum(pg[o] for pg, o in zip(p, incumbent)))
        inc_q = float(sum(qg[o] for qg, o in zip(q, incumbent)))
        has_incumbent = inc_q <= q_cap + _tol(q_cap) and inc_p <= p_cap + _tol(p_cap)
        upper = min(inc_p if has_incumbent else np.inf, p_cap)
        keep = [np.arange(len(pg)) for pg in p]
        lam = plan.multiplier
        if options.reduce and has_incumbent and lam is not None and np.isfinite(lam):
            lam = lam if np.isfinite(q_cap) else 0.0
            lagr = [pg + lam * qg for pg, qg in zip(p, q)]
            dual = float(sum(v.min() for v in lagr)) - (lam * q_cap if lam else 0.0)
            slack = upper - dual
            slack += _tol(upper) + _tol(dual)
            keep = [np.flatnonzero(v - v.min() <= slack) for v in lagr]
        fixed = [g for g, k in enumerate(keep) if len(k) == 1]
        free = [g for g, k in enumerate(keep) if len(k) > 1]
        base_p = float(sum(p[g][keep[g][0]] for g in fixed))
        base_q = float(sum(q[g][keep[g][0]] for g in fixed))
        min_p = np.array([p[g][keep[g]].min() for g in free] + [0.0])
        min_q = np.array([q[g][keep[g]].min() for g in free] + [0.0])
        rem_p = np.cumsum(min_p[::-1])[::-1]  # rem_p[i] = sum of minima of free[i:]
        rem_q = np.cumsum(min_q[::-1])[::-1]
        states_q = np.array([base_q])
        states_p = np.array([base_p])
        parents: list[tuple[np.ndarray, np.ndarray]] = []
        peak = 1
        q_limit = q_cap + _tol(q_cap)
        p_limit = upper + _tol(upper)
        for i, g in enumerate(free):
            opts = keep[g]
            cand_q = (states_q[:, None] + q[g][opts][None, :]).ravel()
            cand_p = (states_p[:, None] + p[g][opts][None, :]).ravel()
            ok = (cand_q + rem_q[i + 1] <= q_limit) & (cand_p + rem_p[i + 1] <= p_limit)
            idx = np.flatnonzero(ok)
            order = idx[np.lexsort((cand_p[idx], cand_q[idx]))]
            sorted_p = cand_p[order]
            best_before = np.minimum.accumulate(np.concatenate(([np.inf], sorted_p[:-1])))
            order = order[sorted_p < best_before]
            width = len(opts)
            parents.append((order // width, opts[order % width]))
            states_q, states_p = cand_q[order], cand_p[order]
            peak = max(peak, len(order))
            too_big = len(order) > options.max_states
            too_late = time_limit is not None and time.perf_counter() - start > time_limit
            if too_big or too_late or len(order) == 0:
                break
        else:
            too_big = too_late = False
        if too_big or too_late:
            limit = "states" if too_big else "time"
            why = (f"the DP frontier exceeded max_states={options.max_states}" if too_big
                   else "the time limit was reached")
            if has_incumbent:
                return Outcome(Status.FEASIBLE, option=incumbent, bound=plan.bound, limit=limit,
                               message=f"{why}; returning the greedy incumbent with its LP bound")
            return Outcome(Status.NO_SOLUTION, bound=plan.bound, limit=limit, message=why)
        extra = {"free_groups": len(free), "fixed_groups": len(fixed), "peak_states": peak}
        if len(states_p) == 0:
            if has_incumbent:  # nothing strictly better survived the pruning: the incumbent is optimal
                return Outcome(Status.OPTIMAL, option=incumbent, bound=inc_p, extra=extra)
            return Outcome(Status.INFEASIBLE, message="exhaustive DP: no allocation meets the budgets", extra=extra)
        best = int(np.argmin(states_p))
        option = np.array([k[0] for k in keep], dtype=np.int64)
        pointer = best
        for g, (parent, chosen) in zip(reversed(free), reversed(parents)):
            option[g] = chosen[pointer]
            pointer = int(parent[pointer])
        value = float(states_p[best])
        if has_incumbent and inc_p < value:
            option, value = incumbent, inc_p
        return Outcome(Status.OPTIMAL, option=option, bound=value, extra=extra)

"""Exact dynamic programming over the grouped knapsack, with Lagrangian reduced-cost fixing.

1. The greedy hull walk gives a feasible incumbent U and the LP multiplier lambda.
2. Reduced costs: every allocation x costs f(x) >= L + sum_g rc_g(x_g), where rc_g(o) = (p + lambda q)[g, o]
   - min_o (p + lambda q)[g, o] >= 0 and L = sum_g min_o (p + lambda q) - lambda Q is the Lagrangian dual
   bound. So an allocation better than L + s has reduced costs summing to at most s.
3. An exact Pareto-frontier DP (states: (constraint used, objective); dominated states, states that
   cannot fit and states whose reduced costs already exceed s are pruned). Starting from a small s and
   growing it, the first round that finds an allocation of value v <= L + s has found the optimum (one
   more round with s = v - L settles any v above L + s). On real problems the LP gap is tiny, so the
   first round is small and exact.

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
        reduce: start from a small reduced-cost slack and grow it (False: one full DP).
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
    return 1e-12 * max(1.0, abs(value)) if np.isfinite(value) else 0.0


class DPSolver(Solver):
    """Exact DP with Lagrangian pruning; the reference for tests, and fast on real problems."""

    name = "dp"
    description = "exact Pareto DP with Lagrangian reduced-cost pruning"
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
        lam = plan.multiplier if plan.multiplier is not None and np.isfinite(plan.multiplier) else 0.0
        if not np.isfinite(q_cap):
            lam = 0.0
        lagr = [pg + lam * qg for pg, qg in zip(p, q)]
        reduced = [v - v.min() for v in lagr]
        dual = float(sum(v.min() for v in lagr)) - (lam * q_cap if lam else 0.0)
        total = upper - dual + _tol(upper) + _tol(dual) if np.isfinite(upper) else np.inf
        if total < 0:
            return Outcome(Status.INFEASIBLE, message=(
                f"the Lagrangian bound {dual:.10g} exceeds the cap {upper:.10g}: no allocation meets the budgets"))
        search = _Search(p, q, reduced, q_cap, lam, upper, options.max_states, start, time_limit)
        slack = total / 256 if options.reduce and np.isfinite(total) else total
        rounds = 0
        while True:
            rounds += 1
            found = search.run(slack)
            extra = {"rounds": rounds, "slack": slack, "lagrangian_bound": dual, **search.stats}
            if found is None and search.stopped:
                why = (f"the DP frontier exceeded max_states={options.max_states}" if search.stopped == "states"
                       else "the time limit was reached")
                if has_incumbent:
                    return Outcome(Status.FEASIBLE, option=incumbent, bound=plan.bound, limit=search.stopped,
                                   message=f"{why}; returning the greedy incumbent with its LP bound", extra=extra)
                return Outcome(Status.NO_SOLUTION, bound=plan.bound, limit=search.stopped, message=why, extra=extra)
            if found is not None:
                option, value = found
                if has_incumbent and inc_p < value:
                    option, value = incumbent, inc_p
                if value <= dual + slack or slack >= total:
                    return Outcome(Status.OPTIMAL, option=option, bound=value, extra=extra)
                slack = min(value - dual + _tol(value) + _tol(dual), total)  # one last, exact round
                continue
            if slack >= total:
                if has_incumbent:  # nothing better than the incumbent exists
                    return Outcome(Status.OPTIMAL, option=incumbent, bound=inc_p, extra=extra)
                return Outcome(Status.INFEASIBLE, message="exhaustive DP: no allocation meets the budgets",
                               extra=extra)
            slack = min(slack * 2, total)


class _Search:
    """One Pareto DP over (q used, p so far) that finds the best allocation with f <= L + slack.

    Since f(x) = L + sum rc(x) + lambda (Q - q(x)) and q(x) <= q_so_far + (largest q the remaining groups
    can add), a state is pruned when rc_so_far + lambda (Q - q_so_far - that largest q) > slack; also when it
    cannot fit, or cannot beat the incumbent."""

    def __init__(self, p: list[np.ndarray], q: list[np.ndarray], reduced: list[np.ndarray], q_cap: float,
                 lam: float, upper: float, max_states: int, start: float, time_limit: float | None) -> None:
        self.p, self.q, self.reduced = p, q, reduced
        self.q_cap, self.lam = q_cap, lam
        self.q_limit = q_cap + _tol(q_cap)
        self.p_limit = upper + _tol(upper)
        self.max_states, self.start, self.time_limit = max_states, start, time_limit
        self.stopped: str | None = None
        self.stats: dict[str, int] = {}

    def run(self, slack: float) -> tuple[np.ndarray, float] | None:
        """The best allocation among those with reduced cost <= slack, or None."""
        p, q = self.p, self.q
        keep = [np.flatnonzero(r <= slack) for r in self.reduced]
        # widest q-ranges first: the remaining groups' largest possible q then shrinks fast, which lets the
        # unused-capacity penalty prune early
        free = sorted((g for g, k in enumerate(keep) if len(k) > 1), key=lambda g: -np.ptp(q[g][keep[g]]))
        fixed = [g for g, k in enumerate(keep) if len(k) == 1]
        base_p = float(sum(p[g][keep[g][0]] for g in fixed))
        base_q = float(sum(q[g][keep[g][0]] for g in fixed))
        min_p = np.array([p[g][keep[g]].min() for g in free] + [0.0])
        min_q = np.array([q[g][keep[g]].min() for g in free] + [0.0])
        max_q = np.array([q[g][keep[g]].max() for g in free] + [0.0])
        rem_p = np.cumsum(min_p[::-1])[::-1]  # rem_p[i] = sum of the minima of free[i:]
        rem_q = np.cumsum(min_q[::-1])[::-1]
        rem_q_max = np.cumsum(max_q[::-1])[::-1]
        penalise = self.lam > 0 and np.isfinite(self.q_cap)
        states_q, states_p, states_r = np.array([base_q]), np.array([base_p]), np.array([0.0])
        parents: list[tuple[np.ndarray, np.ndarray]] = []
        peak = 1
        for i, g in enumerate(free):
            opts = keep[g]
            # (option, state) layout: each option's block stays sorted by q, so the stable sort below only
            # merges len(opts) sorted runs
            cand_q = (q[g][opts][:, None] + states_q[None, :]).ravel()
            cand_p = (p[g][opts][:, None] + states_p[None, :]).ravel()
            cand_r = (self.reduced[g][opts][:, None] + states_r[None, :]).ravel()
            ok = (cand_q + rem_q[i + 1] <= self.q_limit) & (cand_p + rem_p[i + 1] <= self.p_limit) & (cand_r <= slack)
            if penalise:
                unused = np.maximum(self.q_cap - cand_q - rem_q_max[i + 1], 0.0)
                ok &= cand_r + self.lam * unused <= slack
            idx = np.flatnonzero(ok)
            order = idx[np.argsort(cand_q[idx], kind="stable")]
            sorted_p = cand_p[order]
            best_before = np.minimum.accumulate(np.concatenate(([np.inf], sorted_p[:-1])))
            order = order[sorted_p < best_before]  # keep the Pareto staircase: p falls as q grows
            n_states = len(states_q)
            parents.append((order % n_states, opts[order // n_states]))
            states_q, states_p, states_r = cand_q[order], cand_p[order], cand_r[order]
            peak = max(peak, len(order))
            if len(order) > self.max_states:
                self.stopped = "states"
            elif self.time_limit is not None and time.perf_counter() - self.start > self.time_limit:
                self.stopped = "time"
            if self.stopped or len(order) == 0:
                break
        self.stats = {"free_groups": len(free), "fixed_groups": len(fixed), "peak_states": peak}
        if self.stopped or len(states_p) == 0 or (free and len(parents) < len(free)):
            return None
        if not free and (base_q > self.q_limit or base_p > self.p_limit):
            return None
        best = int(np.argmin(states_p))
        option = np.array([k[0] for k in keep], dtype=np.int64)
        pointer = best
        for g, (parent, chosen) in zip(reversed(free), reversed(parents)):
            option[g] = chosen[pointer]
            pointer = int(parent[pointer])
        return option, float(states_p[best])

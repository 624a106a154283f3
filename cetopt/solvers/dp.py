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
from typing import Any

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.granularity import bound_up, cap_down, common_step
from cetopt.solvers.incumbent import greedy_plan
from cetopt.solvers.hull import lower_hulls
from cetopt.solvers.local_search import improve
from cetopt.solvers.result import Outcome, Status


@dataclass(frozen=True)
class DPOptions:
    """Options of the dp backend.

    Attributes:
        max_memory_mb: memory for the back-pointers of all frontiers (6 bytes per state: at 10^6 layers
            they, not the frontier, are what grows); beyond it the answer is as for max_states.
        max_states: largest Pareto frontier allowed; beyond it the greedy incumbent is returned as
            FEASIBLE with its LP bound (limit = "states").
        reduce: start from a small reduced-cost slack and grow it (False: one full DP).
        beam: before each exact round, a search that keeps this many states per group finds an incumbent
            for it to prune against (0: none). It only speeds the proof; the answer is the exact round's.
    """

    max_states: int = 2_000_000
    reduce: bool = True
    max_memory_mb: int = 2048
    beam: int = 1024

    def __post_init__(self) -> None:
        from cetopt.errors import SolverOptionError

        if self.max_states < 1 or self.max_memory_mb < 1:
            raise SolverOptionError("dp: max_states and max_memory_mb must be positive")
        if self.beam < 0:
            raise SolverOptionError("dp: beam must be >= 0 (0: no bounded search before the exact rounds)")


def _axes(compiled: CompiledProblem) -> tuple[np.ndarray, np.ndarray, float, float]:
    """((G, K) p table, (G, K) q table, both padded with +inf; cap on q, cap on p). Tables, not per-group
    lists: at 10^5 - 10^6 groups the per-group Python was most of dp's time."""
    inf = float("inf")
    loss = compiled.padded("loss", inf)
    if compiled.minimize is Minimize.SIZE:
        q_cap = compiled.max_loss if compiled.max_loss is not None else inf
        p_cap = compiled.max_size if compiled.max_size is not None else inf
        return compiled.padded("size", inf), loss, q_cap, p_cap
    resources = compiled.resources()
    p_cap = compiled.max_loss if compiled.max_loss is not None else inf
    if not resources:
        return loss, np.where(np.isfinite(loss), 0.0, inf), inf, p_cap
    name, limit, _ = resources[0]
    return loss, compiled.padded(name, inf), limit, p_cap


def _stepped_axes(compiled: CompiledProblem) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """:func:`_axes` with both caps rounded down to their table's common step, and the objective's step.

    Every total of an integer table is a multiple of its common step, so a cap rounds down and a bound up to such
    a multiple (cetopt.solvers.granularity): both get tighter and no allocation is lost."""
    p, q, q_cap, p_cap = _axes(compiled)
    p_step = common_step(p)
    return p, q, cap_down(q_cap + _tol(q_cap), common_step(q)), cap_down(p_cap + _tol(p_cap), p_step), p_step


def _within_caps(p: np.ndarray, q: np.ndarray, option: np.ndarray, q_cap: float, p_cap: float) -> tuple[float, bool]:
    """The objective of ``option`` (one index per group) and whether it keeps both caps."""
    rows = np.arange(len(option))
    value, used = float(p[rows, option].sum()), float(q[rows, option].sum())
    return value, used <= q_cap + _tol(q_cap) and value <= p_cap + _tol(p_cap)


def _pad(arrays: list[np.ndarray], fill: float) -> np.ndarray:
    counts = np.array([len(a) for a in arrays])
    table = np.full((len(arrays), counts.max()), fill)
    table[np.arange(counts.max())[None, :] < counts[:, None]] = np.concatenate(arrays)
    return table


def _tol(value: float) -> float:
    """Float noise allowed on a total: relative to the value (losses may be 1e-20 of the loss unit)."""
    return 1e-12 * abs(value) + 1e-300 if np.isfinite(value) else 0.0


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
        p, q, q_cap, p_cap, p_step = _stepped_axes(compiled)
        incumbent = improve(compiled, plan.choice_index)
        inc_p, has_incumbent = _within_caps(p, q, incumbent, q_cap, p_cap)
        upper = min(inc_p if has_incumbent else np.inf, p_cap)
        reduced, dual = _reduced_costs(p, q, q_cap, plan.multiplier)
        # reduced costs prove against the Lagrangian bound itself (an allocation of objective v has reduced cost
        # at most v - dual); rounded up to the objective's step it is a valid bound to report, never to prove with
        floor = bound_up(dual, p_step)
        total = upper - dual + _tol(upper) + _tol(dual) if np.isfinite(upper) else np.inf
        if upper - floor + _tol(upper) + _tol(floor) < 0:
            return Outcome(Status.INFEASIBLE, message=(
                f"the Lagrangian bound {floor:.10g} exceeds the cap {upper:.10g}: no allocation meets the budgets"))
        # back-pointers take 6 bytes per stored state (_Search.run)
        limits = _Limits(options.max_states, options.max_memory_mb * 2**20 // 6, start, time_limit)
        search = _Search(p, q, reduced, q_cap, dual, upper, limits)
        schedule = _slack_schedule(reduced, total) if options.reduce else np.array([total])
        slack = float(schedule[0])
        rounds = 0
        proven = floor  # a completed round that found nothing proves every allocation costs more than dual + slack
        while True:
            rounds += 1
            if options.beam and slack < total:
                # a bounded search first: an allocation it finds lowers the target the exact round prunes
                # against, and the slack that round needs (a good incumbent is most of the proof's speed)
                heuristic = search.run(slack, beam=options.beam)
                if heuristic is not None and not search.stopped and (not has_incumbent or heuristic[1] < inc_p):
                    incumbent, inc_p, has_incumbent = heuristic[0], heuristic[1], True
                    upper = min(upper, inc_p)
                    search.p_limit = min(search.p_limit, upper + _tol(upper))
                    total = upper - dual + _tol(upper) + _tol(dual)
                    slack = min(slack, total)
            found = None if search.stopped else search.run(slack)  # (the bounded search ran out of time)
            extra = {"rounds": rounds, "slack": slack, "lagrangian_bound": floor, **search.stats}
            if found is None and search.stopped:
                bound = max(plan.bound, proven) if plan.bound is not None else proven
                return _stopped(search.stopped, options, bound, incumbent if has_incumbent else None, extra)
            if found is not None:
                option, value = found
                if has_incumbent and inc_p < value:
                    option, value = incumbent, inc_p
                if value <= dual + slack or slack >= total:
                    return Outcome(Status.OPTIMAL, choice_index=option, bound=value, extra=extra)
                slack = min(value - dual + _tol(value) + _tol(dual), total)  # one last, exact round
                continue
            if slack >= total:
                if has_incumbent:  # nothing better than the incumbent exists
                    return Outcome(Status.OPTIMAL, choice_index=incumbent, bound=inc_p, extra=extra)
                return Outcome(Status.INFEASIBLE, message="exhaustive DP: no allocation meets the budgets",
                               extra=extra)
            reached = min(dual + slack, upper)
            proven = max(proven, bound_up(reached - _tol(reached) - _tol(dual), p_step))
            slack = float(schedule[np.searchsorted(schedule, slack, side="right")])


def _reduced_costs(p: np.ndarray, q: np.ndarray, q_cap: float, multiplier: float | None) -> tuple[np.ndarray, float]:
    """Each option's Lagrangian reduced cost (G, K), p + lam q less its group's least, and the Lagrangian bound
    (the dual) they prove against; lam is the LP's size multiplier (0 without a finite size cap)."""
    lam = multiplier if multiplier is not None and np.isfinite(multiplier) and np.isfinite(q_cap) else 0.0
    lagr = np.where(np.isfinite(p), p + lam * np.where(np.isfinite(q), q, 0.0), np.inf)
    low = lagr.min(axis=1)
    return lagr - low[:, None], float(low.sum()) - (lam * q_cap if lam else 0.0)


def _stopped(limit: str, options: DPOptions, bound: float, incumbent: np.ndarray | None,
             extra: dict[str, Any]) -> Outcome:
    """The outcome of a DP that hit ``limit`` ("states" or "time") before proving: the incumbent (when there is
    one) with the bound the completed rounds proved."""
    why = (f"the DP frontiers exceeded max_states={options.max_states} or max_memory_mb={options.max_memory_mb}"
           if limit == "states" else "the time limit was reached")
    if incumbent is not None:
        return Outcome(Status.FEASIBLE, choice_index=incumbent, bound=bound, limit=limit, extra=extra,
                       message=f"{why}; returning the greedy incumbent with the bound the completed DP rounds proved")
    return Outcome(Status.NO_SOLUTION, bound=bound, limit=limit, message=why, extra=extra)


def _slack_schedule(reduced: np.ndarray, total: float) -> np.ndarray:
    """Increasing slacks ending at ``total``: the one that admits the 32 cheapest positive reduced costs, then
    45, 64, 90, 128, ... (x sqrt 2). The schedule counts admitted options rather than scaling the slack because a
    round's work grows with the options it admits, and a small fraction of the gap can already admit most groups
    when sensitivities are spread widely. It grows by sqrt 2 rather than 2 so the deciding round admits at most
    ~1.4 times the options it needs; the rounds that find nothing are cheap."""
    positive = np.sort(reduced[np.isfinite(reduced) & (reduced > 0)])
    if not np.isfinite(total):
        return np.array([total])
    steps = 2 * max(1, int(np.ceil(np.log2(max(positive.size, 1) / 32)))) + 1
    counts = (32 * 2 ** (np.arange(steps) / 2)).astype(np.int64)
    picks = positive[np.minimum(counts, positive.size) - 1] if positive.size else np.array([])
    return np.unique(np.concatenate((picks[picks < total], [total])))


class _SuffixLP:
    """LP bounds of the undecided groups: h(c) = min sum p s.t. sum q <= c over the groups not yet
    processed, with one option each relaxed to their lower convex hulls (cetopt.solvers.hull)."""

    def __init__(self, q: list[np.ndarray], p: list[np.ndarray]) -> None:
        n = len(q)
        if n == 0:
            self.n = 0
            return
        q_table, p_table = _pad(q, np.inf), _pad(p, np.inf)
        hull, length = lower_hulls(q_table, p_table)
        rows = np.arange(n)
        self.base_q = q_table[rows, hull[:, 0]]
        self.base_p = p_table[rows, hull[:, 0]]
        width = hull.shape[1]
        pos = np.arange(width - 1)[None, :].repeat(n, axis=0)
        valid = pos < (length - 1)[:, None]
        lo = np.take_along_axis(hull, pos, axis=1)
        hi = np.take_along_axis(hull, np.minimum(pos + 1, width - 1), axis=1)
        group = np.broadcast_to(rows[:, None], pos.shape)[valid]
        dq = (np.take_along_axis(q_table, np.maximum(hi, 0), axis=1) - np.take_along_axis(q_table, lo, axis=1))[valid]
        dp = (np.take_along_axis(p_table, np.maximum(hi, 0), axis=1) - np.take_along_axis(p_table, lo, axis=1))[valid]
        order = np.argsort(dp / dq, kind="stable")  # most p saved per unit q first
        self.group, self.dq, self.dp = group[order], dq[order], dp[order]
        self.n = n
        self.active = np.ones(len(self.group), dtype=bool)
        self.rest_q = float(self.base_q.sum())
        self.rest_p = float(self.base_p.sum())

    def drop(self, i: int) -> None:
        """Group i has been decided: remove it from the bound."""
        self.active &= self.group != i
        self.rest_q -= self.base_q[i]
        self.rest_p -= self.base_p[i]

    def bound(self, capacity: np.ndarray) -> np.ndarray:
        """h(capacity) for each entry (inf where even the least-q hull points do not fit)."""
        if self.n == 0 or not self.active.any():
            base = self.rest_p if self.n else 0.0
            rest_q = self.rest_q if self.n else 0.0
            return np.where(capacity >= rest_q - _tol(rest_q), base, np.inf)
        dq, dp = self.dq[self.active], self.dp[self.active]
        cum_q, cum_p = np.cumsum(dq), np.cumsum(dp)
        room = capacity - self.rest_q
        full = np.searchsorted(cum_q, room, side="right")
        value = self.rest_p + np.where(full > 0, cum_p[np.maximum(full - 1, 0)], 0.0)
        partial = full < len(dq)
        spent = np.where(full > 0, cum_q[np.maximum(full - 1, 0)], 0.0)
        step = np.minimum(full, len(dq) - 1)
        value = value + np.where(partial, (room - spent) / dq[step] * dp[step], 0.0)
        return np.where(room >= -_tol(self.rest_q), value, np.inf)


@dataclass(frozen=True)
class _Limits:
    """When a DP round stops unproven: more than ``max_states`` states after a group, more than ``max_stored``
    back-pointer entries over all groups, or ``time_limit`` seconds after ``start`` (perf_counter)."""

    max_states: int
    max_stored: int
    start: float
    time_limit: float | None


class _Search:
    """One Pareto DP over (q used, p so far) that finds the best allocation with f <= L + slack.

    A state is pruned when its reduced costs exceed the slack, or when its p plus the LP bound of the
    undecided groups (given the capacity left) exceeds min(L + slack, incumbent); every allocation with
    f <= L + slack survives both, so the best final state is optimal whenever one exists."""

    def __init__(self, p: np.ndarray, q: np.ndarray, reduced: np.ndarray, q_cap: float, dual: float, upper: float,
                 limits: _Limits) -> None:
        self.p_table, self.q_table, self.reduced_table = p, q, reduced
        self.q_cap, self.dual = q_cap, dual
        self.q_limit = q_cap + _tol(q_cap)
        self.p_limit = upper + _tol(upper)
        self.limits = limits
        self.stopped: str | None = None
        self.stats: dict[str, int] = {}

    def run(self, slack: float, beam: int | None = None) -> tuple[np.ndarray, float] | None:
        """The best allocation among those with reduced cost <= slack, or None.

        With ``beam``, only that many states survive each group (those of least p + LP bound): a heuristic
        that finds a good allocation in bounded time, not a proof."""
        p, q, reduced = self.p_table, self.q_table, self.reduced_table
        self.stopped = None
        first, single, keep, free = self._free_groups(slack)
        base_p = float(p[np.flatnonzero(single), first[single]].sum())
        base_q = float(q[np.flatnonzero(single), first[single]].sum())
        suffix = _SuffixLP([q[g][keep[g]] for g in free], [p[g][keep[g]] for g in free])
        target = min(self.p_limit, self.dual + slack + _tol(self.dual + slack))
        states_q, states_p, states_r = np.array([base_q]), np.array([base_p]), np.array([0.0])
        parents: list[tuple[np.ndarray, np.ndarray]] = []
        stored = 0
        peak = 1
        for i, g in enumerate(free):
            opts = keep[g]
            suffix.drop(i)
            # (option, state) layout: each option's block stays sorted by q, so the stable sort below only
            # merges len(opts) sorted runs
            cand_q = (q[g][opts][:, None] + states_q[None, :]).ravel()
            cand_p = (p[g][opts][:, None] + states_p[None, :]).ravel()
            cand_r = (reduced[g][opts][:, None] + states_r[None, :]).ravel()
            idx = np.flatnonzero(cand_r <= slack)
            order = idx[np.argsort(cand_q[idx], kind="stable")]
            sorted_p = cand_p[order]
            best_before = np.minimum.accumulate(np.concatenate(([np.inf], sorted_p[:-1])))
            order = order[sorted_p < best_before]  # keep the Pareto staircase: p falls as q grows
            # the LP bound last, on the staircase only: a state dominated by a pruned one is pruned too
            # (the bound h falls as capacity grows), so the order of the two filters changes nothing
            low = cand_p[order] + suffix.bound(self.q_limit - cand_q[order])
            fit = low <= target
            order = order[fit]
            if beam is not None and len(order) > beam:
                order = order[_beam_keep(low[fit], beam)]
            n_states = len(states_q)
            # compact back-pointers (int32 state, uint16 option; ties expand to <= 4096 options): 6 bytes
            # per state instead of 16
            parents.append(((order % n_states).astype(np.int32), opts[order // n_states].astype(np.uint16)))
            stored += len(order)
            states_q, states_p, states_r = cand_q[order], cand_p[order], cand_r[order]
            peak = max(peak, len(order))
            self.stopped = self._limit_reached(len(order), stored, beam)
            if self.stopped or len(order) == 0:
                break
        if beam is None:
            self.stats = {"free_groups": len(free), "fixed_groups": int(single.sum()), "peak_states": peak}
        if self.stopped or len(states_p) == 0 or (free and len(parents) < len(free)):
            return None
        if not free and (base_q > self.q_limit or base_p > self.p_limit):
            return None
        best = int(np.argmin(states_p))
        option = first.astype(np.int64)
        pointer = best
        for g, (parent, chosen) in zip(reversed(free), reversed(parents)):  # follow the back-pointers
            option[g] = chosen[pointer]
            pointer = int(parent[pointer])
        return option, float(states_p[best])

    def _limit_reached(self, n_states: int, stored: int, beam: int | None) -> str | None:
        """"states" when an exact round holds too many states (after this group, or stored over all), "time"
        past the time limit, else None."""
        if beam is None and (n_states > self.limits.max_states or stored > self.limits.max_stored):
            return "states"
        limit = self.limits.time_limit
        return "time" if limit is not None and time.perf_counter() - self.limits.start > limit else None

    def _free_groups(self, slack: float) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], list[int]]:
        """Which options a round with ``slack`` admits: each group's first admitted option (G,), the groups with
        only one (G,) bool, the others' admitted options, and those groups in the order the DP takes them."""
        mask = self.reduced_table <= slack  # (G, K); every group keeps at least its zero-reduced-cost option
        single = mask.sum(axis=1) == 1
        keep = {int(g): np.flatnonzero(mask[g]) for g in np.flatnonzero(~single)}
        # widest q-ranges first: the remaining groups' largest possible q then shrinks fast, which lets the
        # unused-capacity penalty prune early
        free = sorted(keep, key=lambda g: -np.ptp(self.q_table[g][keep[g]]))
        return np.argmax(mask, axis=1), single, keep, free


def _beam_keep(low: np.ndarray, beam: int) -> np.ndarray:
    """Which of the q-sorted states a beam of width ``beam`` keeps (indices in q order): half the most promising
    (least p + LP bound ``low``), half spread evenly over q (the LP bound cannot see which capacities the
    remaining groups can fill exactly)."""
    best = np.argpartition(low, beam // 2)[:beam // 2]
    spread = np.linspace(0, len(low) - 1, beam - beam // 2).astype(np.int64)
    return np.unique(np.concatenate((best, spread)))

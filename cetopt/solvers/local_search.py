"""Single-group moves: repair an infeasible allocation, then improve a feasible one.

Used to spend the slack a greedy walk leaves, and to turn a rounded relaxation into a feasible
allocation. Each round evaluates every (group, option) move at once on the (G, K) padded layout, with
interaction terms included exactly (a move changes one group, so its pairwise delta is exact).
"""

from __future__ import annotations

import numpy as np

from typing import TYPE_CHECKING

from cetopt.problem.compiled import CompiledProblem, fits

if TYPE_CHECKING:
    from cetopt.solvers.result import Outcome
from cetopt.problem.model import Minimize


class MoveTables:
    """Padded per-option tables and the constraint list of a compiled problem."""

    def __init__(self, compiled: CompiledProblem) -> None:
        self.compiled = compiled
        self.loss = compiled.padded("loss", np.inf)
        self.size = compiled.padded("size", np.inf)
        self.valid = np.isfinite(self.size)
        self.limits: list[tuple[np.ndarray | None, float]] = []  # (per-option table or None for loss, limit)
        if compiled.max_size is not None:
            self.limits.append((self.size, compiled.max_size))
        if compiled.max_bops is not None:
            self.limits.append((compiled.padded("bops", np.inf), compiled.max_bops))
        if compiled.max_loss is not None:
            self.limits.append((None, compiled.max_loss))
        self.rows = np.arange(compiled.n_groups)

    def interaction_delta(self, option: np.ndarray) -> np.ndarray:
        """(G, K): change of the pairwise terms if group g alone switched to option k."""
        delta = np.zeros_like(self.loss)
        for pair in self.compiled.pairs:
            oa, ob = option[pair.a], option[pair.b]
            col = pair.matrix[:, ob]
            row = pair.matrix[oa, :]
            delta[pair.a, : col.shape[0]] += col - col[oa]
            delta[pair.b, : row.shape[0]] += row - row[ob]
        return delta

    def totals(self, option: np.ndarray) -> tuple[float, list[float]]:
        """(objective, [constraint totals in the order of self.limits])."""
        objective, loss, size, bops = self.compiled.objective_values(option)
        values = []
        for table, _ in self.limits:
            if table is None:
                values.append(loss)
            elif table is self.size:
                values.append(size)
            else:
                values.append(float(bops))  # type: ignore[arg-type]
        return objective, values


def _tol(limit: float) -> float:
    return 1e-12 * max(1.0, abs(limit))


def improve(compiled: CompiledProblem, option: np.ndarray, *, max_rounds: int | None = None) -> np.ndarray:
    """Repair (if needed) then improve ``option`` by best single-group moves until none helps.

    Returns a new option array; it is feasible unless no sequence of single moves could repair it.
    """
    tables = MoveTables(compiled)
    option = np.array(option, dtype=np.int64)
    rounds = max_rounds if max_rounds is not None else 20 * compiled.n_groups + 100
    minimize_size = compiled.minimize is Minimize.SIZE
    for _ in range(rounds):
        cur_loss = tables.loss[tables.rows, option]
        d_loss = tables.loss - cur_loss[:, None]
        if compiled.pairs:
            d_loss = d_loss + tables.interaction_delta(option)
        objective, totals = tables.totals(option)
        violation = np.zeros_like(tables.loss)
        current_violation = 0.0
        feasible_after = tables.valid.copy()
        for (table, limit), total in zip(tables.limits, totals):
            delta = d_loss if table is None else table - table[tables.rows, option][:, None]
            new_total = total + delta
            scale = max(abs(limit), 1e-30)
            violation += np.maximum(new_total - limit, 0.0) / scale
            current_violation += max(total - limit, 0.0) / scale
            feasible_after &= new_total <= limit + _tol(limit)
        d_obj = (tables.size - tables.size[tables.rows, option][:, None]) if minimize_size else d_loss
        if current_violation > 1e-12:
            # repair: the largest violation decrease, then the smallest objective increase
            gain = np.where(tables.valid, current_violation - violation, -np.inf)
            best = gain.max()
            if best <= 1e-15:
                return option
            cands = np.flatnonzero(gain.ravel() >= best - 1e-12 * max(1.0, best))
            pick = cands[np.argmin(d_obj.ravel()[cands])]
        else:
            score = np.where(feasible_after, d_obj, np.inf)
            pick = int(np.argmin(score))
            if not score.ravel()[pick] < -1e-12 * max(1.0, abs(objective)):
                return option
        g, k = divmod(int(pick), tables.loss.shape[1])
        option[g] = k
    return option


def is_feasible(compiled: CompiledProblem, option: np.ndarray) -> bool:
    """Whether ``option`` meets every budget (with the same tolerance as ``cetopt.problem.evaluate``)."""
    _, loss, size, bops = compiled.objective_values(option)
    return fits(size, compiled.max_size) and fits(loss, compiled.max_loss) and \
        (compiled.max_bops is None or fits(bops, compiled.max_bops))  # type: ignore[arg-type]


def polish(compiled: CompiledProblem, option: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return ``option`` unchanged if feasible; else a repaired one. The flag says whether it was repaired.

    MIP engines accept solutions within their feasibility tolerance (about 1e-6 of a row), which can put
    a size total a few bits over a budget of 1e9 bits; this makes such answers truly feasible. Callers
    must check :func:`is_feasible` on the result: an engine may also "solve" a problem that is infeasible
    by less than its tolerance.
    """
    if is_feasible(compiled, option):
        return option, False
    return improve(compiled, option), True


def unrepairable(compiled: CompiledProblem, engine: str) -> "Outcome":
    """The outcome when an engine's answer breaks a budget beyond repair: INFEASIBLE if a budget alone
    is unattainable (exact floors), else NO_SOLUTION."""
    from cetopt.problem.feasibility import budget_shortfalls
    from cetopt.solvers.result import Outcome, Status

    shortfalls = budget_shortfalls(compiled)
    if shortfalls:
        return Outcome(Status.INFEASIBLE, message="; ".join(shortfalls))
    return Outcome(Status.NO_SOLUTION, message=(
        f"{engine} returned an allocation that breaks a budget by more than its tolerance and single-layer "
        "moves could not repair it; the problem may be infeasible by less than the engine's tolerance"))

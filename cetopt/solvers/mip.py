"""The pipeline every MIP backend (highs, ortools-mip, ortools) shares around its engine.

1. ``prepare``: the greedy incumbent (hull walk + single-group moves), the reductions of
   :mod:`cetopt.solvers.reduce` (LP reduced-cost fixing, resource fixing, dominance), and the scaled
   linear model of what is left. The engine is warm-started with the incumbent.
2. The engine runs on the reduced model, with the time left (:class:`cetopt.solvers.deadline.Deadline`).
3. ``conclude``: its verdict (from the backend's native-status table), answer and bound are mapped back
   to the full problem. The bound reported is max(engine bound, LP bound L): the reduced problem holds
   every allocation no worse than the incumbent, so its optimum is the full problem's. An answer that
   breaks a budget within the engine's tolerance is repaired; the better of it and the incumbent wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.deadline import Deadline
from cetopt.solvers.incumbent import Incumbent, greedy_incumbent
from cetopt.solvers.linear_model import LinearModel, build_linear_model
from cetopt.solvers.local_search import is_feasible, polish, unrepairable
from cetopt.solvers.reduce import Reduction, reduce_problem
from cetopt.solvers.result import Outcome, Status

# an engine's bound holds up to its feasibility tolerance: this relative margin is taken off it
BOUND_MARGIN = 1e-9


class Verdict(Enum):
    """What an engine's native status means to cetopt (each backend maps its codes in a table)."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    TIME = "time"
    INTERRUPTED = "interrupted"
    ERROR = "error"


@dataclass(frozen=True)
class Prepared:
    """What the engine gets: the reduced problem, its linear model, the incumbent and the deadline."""

    compiled: CompiledProblem
    incumbent: Incumbent
    reduction: Reduction
    deadline: Deadline
    seconds: float  # spent preparing

    def linear_model(self) -> LinearModel:
        reference = self.incumbent.objective if self.incumbent.feasible else None
        return build_linear_model(self.reduction.compiled, reference)

    def warm_start(self, model: LinearModel) -> np.ndarray | None:
        """The incumbent as a full variable vector of ``model``, or None without a feasible incumbent."""
        if self.reduction.incumbent is None:
            return None
        return model.x_from_option(self.reduction.incumbent, self.reduction.compiled.pairs)

    def stats(self) -> dict[str, Any]:
        kept = sum(len(k) for k in self.reduction.keep)
        free = sum(len(k) > 1 for k in self.reduction.keep)
        return {"options_kept": kept, "options_dropped": self.reduction.dropped, "free_groups": free,
                "lp_bound": self.reduction.lower, "prepare_seconds": round(self.seconds, 4)}


def prepare(compiled: CompiledProblem, time_limit: float | None, deadline: Deadline | None = None) -> Prepared:
    """Steps 1 of the module docstring (the deadline starts now, or is the one given, so this work counts)."""
    deadline = deadline if deadline is not None else Deadline(time_limit)
    incumbent = greedy_incumbent(compiled)
    reduction = reduce_problem(compiled, incumbent)
    return Prepared(compiled, incumbent, reduction, deadline, deadline.elapsed())


def conclude(prepared: Prepared, engine: str, verdict: Verdict, choice_index: np.ndarray | None,
             bound: float | None, extra: dict[str, Any], note: str = "") -> Outcome:
    """Step 3 of the module docstring; ``choice_index`` and ``bound`` are in the reduced problem."""
    compiled, incumbent, reduction = prepared.compiled, prepared.incumbent, prepared.reduction
    extra = {**prepared.stats(), **extra}
    limit = {Verdict.TIME: "time", Verdict.INTERRUPTED: "interrupted"}.get(verdict)
    if bound is not None:
        bound = max(bound - BOUND_MARGIN * abs(bound), reduction.lower)
    elif np.isfinite(reduction.lower):
        bound = reduction.lower
    if verdict is Verdict.INFEASIBLE and not incumbent.feasible:
        return Outcome(Status.INFEASIBLE, message=f"{engine} proved the MILP infeasible", extra=extra)
    if choice_index is None:
        if incumbent.feasible:
            why = {Verdict.TIME: "the time limit struck", Verdict.INTERRUPTED: "it was interrupted",
                   Verdict.INFEASIBLE: "it called the model infeasible within its tolerances"}.get(
                verdict, f"it stopped ({extra.get('native_status')})")
            return Outcome(Status.FEASIBLE, choice_index=incumbent.choice_index, bound=bound, limit=limit,
                           extra=extra, message=f"{engine} found no allocation before {why}; returning the "
                                                "greedy incumbent")
        status = Status.NO_SOLUTION if limit else Status.ERROR
        return Outcome(status, bound=bound, limit=limit, extra=extra,
                       message=f"{engine} stopped ({extra.get('native_status')}) without an allocation")
    option, repaired = polish(compiled, reduction.lift(choice_index))
    if repaired and not is_feasible(compiled, option):
        return unrepairable(compiled, engine)
    if incumbent.feasible and incumbent.objective < compiled.objective_values(option)[0]:
        option = incumbent.choice_index
    notes = [note] if note else []
    if repaired:
        notes.append(f"{engine}'s answer broke a budget within its feasibility tolerance and was repaired")
    status = Status.OPTIMAL if verdict is Verdict.OPTIMAL and not repaired else Status.FEASIBLE
    if verdict is Verdict.TIME:
        notes.append(f"{engine} stopped at the time limit")
    return Outcome(status, choice_index=option, bound=bound, limit=limit, message="; ".join(notes), extra=extra)

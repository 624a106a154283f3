"""The greedy complement solver: walk down the layers' convex hulls, then spend the slack.

Every layer starts at its most precise choice; bits are moved to the complement one hull step at a
time, always the step with the smallest loss increase per bit saved, until every budget holds. The
step that crossed the budget, taken fractionally, is the LP relaxation, so the walk also certifies a
lower bound (exact for one resource; for several, the best single-resource bound). Any remaining
slack is spent by single-layer moves (cetopt.solvers.local_search). Vectorised over layers (timings in
docs/results/speed.md).
The walk is :func:`cetopt.solvers.incumbent.greedy_plan`, shared with the exact backends.
"""

from __future__ import annotations

from dataclasses import dataclass

from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.incumbent import greedy_plan
from cetopt.solvers.local_search import improve, is_feasible
from cetopt.solvers.result import GAP_TOLERANCE, Outcome, Status


@dataclass(frozen=True)
class GreedyOptions:
    """Options of the greedy backend.

    Attributes:
        improve: spend leftover budget (and repair any budget the walk did not see) by single-layer moves.
    """

    improve: bool = True


class GreedySolver(Solver):
    """Greedy complement solver with an LP lower bound; near-instant, usually within 1e-3 of optimal."""

    name = "greedy"
    description = "convex-hull greedy walk + slack spending; LP lower bound"
    capabilities = Capabilities(exact=False, proves_bound=True, interactions=True)
    Options = GreedyOptions

    def run(self, compiled: CompiledProblem, options: GreedyOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        plan = greedy_plan(compiled)
        if plan.infeasible:
            return Outcome(Status.INFEASIBLE, message=f"the LP relaxation over {plan.resource} is infeasible")
        option = improve(compiled, plan.choice_index) if options.improve else plan.choice_index
        if not is_feasible(compiled, option):
            return Outcome(Status.NO_SOLUTION, bound=plan.bound,
                           message="the greedy walk and single-layer repairs found no feasible allocation; "
                                   "try an exact backend (ortools) to find one or prove infeasibility")
        objective = compiled.objective_values(option)[0]
        proved = plan.bound is not None and objective - plan.bound <= GAP_TOLERANCE * max(abs(objective),
                                                                                           abs(plan.bound))
        return Outcome(Status.OPTIMAL if proved else Status.FEASIBLE, choice_index=option, bound=plan.bound,
                       extra={"walked": plan.resource})

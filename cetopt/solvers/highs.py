"""Exact MILP through HiGHS as bundled in SciPy (``scipy.optimize.milp``): no extra package needed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.greedy import greedy_plan, time_limit_fallback
from cetopt.solvers.linear_model import build_linear_model, reference_objective
from cetopt.solvers.local_search import is_feasible, polish, unrepairable
from cetopt.solvers.result import Outcome, Status


@dataclass(frozen=True)
class HighsOptions:
    """Options of the highs backend.

    Attributes:
        mip_rel_gap: relative optimality gap at which HiGHS stops (1e-9: proved optimal in practice).
        presolve: run HiGHS presolve.
    """

    mip_rel_gap: float = 1e-9
    presolve: bool = True


class HighsSolver(Solver):
    """Branch-and-cut MILP (HiGHS via SciPy) on the linear form; exact, interactions linearised."""

    name = "highs"
    description = "HiGHS MILP via scipy.optimize.milp (exact, RLT-linearised interactions)"
    requires = ("scipy",)
    capabilities = Capabilities(exact=True, proves_bound=True, interactions=True)
    Options = HighsOptions

    def run(self, compiled: CompiledProblem, options: HighsOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        model = build_linear_model(compiled, reference_objective(compiled))
        integrality = np.zeros(model.n_vars)
        integrality[: model.n_x] = 1
        constraints = [LinearConstraint(model.a_eq, model.b_eq, model.b_eq)]
        if model.a_ub.shape[0]:
            # a hair of slack absorbs the row normalisation's rounding; solve() re-checks exactly
            constraints.append(LinearConstraint(model.a_ub, -np.inf, model.b_ub + 1e-12 * np.maximum(1, abs(model.b_ub))))
        solver_options = {"mip_rel_gap": options.mip_rel_gap, "presolve": options.presolve, "disp": False}
        if time_limit is not None:
            solver_options["time_limit"] = float(time_limit)
        result = milp(model.c, integrality=integrality, bounds=Bounds(0, 1), constraints=constraints,
                      options=solver_options)
        raw_bound = getattr(result, "mip_dual_bound", None)
        bound = model.true_objective(raw_bound) if raw_bound is not None and np.isfinite(raw_bound) else None
        if bound is not None:
            bound -= 1e-9 * max(1.0, abs(bound))  # HiGHS' dual bound holds up to its feasibility tolerance
        extra = {"native_status": int(result.status), "native_message": str(result.message)}
        if result.status == 2:
            return Outcome(Status.INFEASIBLE, message="HiGHS proved the MILP infeasible", extra=extra)
        if result.x is None and result.status == 1:
            return time_limit_fallback(compiled, bound, "HiGHS")
        if result.x is None:
            limit = "time" if result.status == 1 else None
            status = Status.NO_SOLUTION if result.status == 1 else Status.ERROR
            return Outcome(status, bound=bound, limit=limit, message=str(result.message), extra=extra)
        option, repaired = polish(compiled, model.option_from_x(result.x[: model.n_x]))
        if repaired and not is_feasible(compiled, option):
            return unrepairable(compiled, "HiGHS")
        if bound is None:
            bound = greedy_plan(compiled).bound
        limit = "time" if result.status == 1 else None
        if result.status == 0 and not repaired:
            return Outcome(Status.OPTIMAL, option=option, bound=bound, extra=extra)
        note = "HiGHS' answer broke a budget within its feasibility tolerance and was repaired; " if repaired else ""
        return Outcome(Status.FEASIBLE, option=option, bound=bound, limit=limit, message=note + str(result.message),
                       extra=extra)

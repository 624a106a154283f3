"""Exact MILP through OR-Tools' linear solver wrapper (SCIP by default; CBC also ships).

A second, independent exact engine, so that exact backends can check each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cetopt.errors import SolverOptionError
from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.greedy import time_limit_fallback
from cetopt.solvers.linear_model import build_linear_model, reference_objective
from cetopt.solvers.local_search import is_feasible, polish, unrepairable
from cetopt.solvers.result import Outcome, Status

ENGINES = ("SCIP", "CBC")


@dataclass(frozen=True)
class OrToolsMipOptions:
    """Options of the ortools-mip backend.

    Attributes:
        engine: "SCIP" (default) or "CBC".
        relative_gap: relative MIP gap at which the engine stops.
        threads: engine threads.
    """

    engine: str = "SCIP"
    relative_gap: float = 1e-9
    threads: int = 1


class OrToolsMipSolver(Solver):
    """OR-Tools pywraplp (SCIP/CBC) on the linear form; exact, interactions linearised."""

    name = "ortools-mip"
    description = "OR-Tools linear solver wrapper (SCIP or CBC), exact"
    requires = ("ortools",)
    install_hint = "pip install 'ortools==9.14.6206'"
    capabilities = Capabilities(exact=True, proves_bound=True, interactions=True)
    Options = OrToolsMipOptions

    def run(self, compiled: CompiledProblem, options: OrToolsMipOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        from ortools.linear_solver import pywraplp

        engine = options.engine.upper()
        if engine not in ENGINES:
            raise SolverOptionError(f"ortools-mip: engine must be one of {ENGINES}, got {options.engine!r}")
        solver = pywraplp.Solver.CreateSolver(engine)
        if solver is None:
            return Outcome(Status.ERROR, message=f"OR-Tools was built without the {engine} engine")
        model = build_linear_model(compiled, reference_objective(compiled))
        x = [solver.BoolVar("") for _ in range(model.n_x)] + \
            [solver.NumVar(0.0, 1.0, "") for _ in range(model.n_vars - model.n_x)]
        for matrix, rhs, equal in ((model.a_eq, model.b_eq, True), (model.a_ub, model.b_ub, False)):
            for r in range(matrix.shape[0]):
                start, end = matrix.indptr[r], matrix.indptr[r + 1]
                lo = rhs[r] if equal else -solver.infinity()
                hi = rhs[r] if equal else rhs[r] + 1e-12 * max(1.0, abs(rhs[r]))
                constraint = solver.Constraint(float(lo), float(hi))
                for col, val in zip(matrix.indices[start:end], matrix.data[start:end]):
                    constraint.SetCoefficient(x[col], float(val))
        objective = solver.Objective()
        for col in np.flatnonzero(model.c):
            objective.SetCoefficient(x[col], float(model.c[col]))
        objective.SetMinimization()
        if time_limit is not None:
            solver.SetTimeLimit(int(max(1, time_limit * 1000)))
        solver.SetNumThreads(options.threads)
        if engine == "SCIP":  # tighter than SCIP's 1e-6 so a 1e9-bit budget is not overrun by ~1e3 bits
            solver.SetSolverSpecificParametersAsString("numerics/feastol = 1e-9\n")
        params = pywraplp.MPSolverParameters()
        params.SetDoubleParam(params.RELATIVE_MIP_GAP, options.relative_gap)
        code = solver.Solve(params)
        extra = {"native_status": int(code), "engine": engine}
        if code == pywraplp.Solver.INFEASIBLE:
            return Outcome(Status.INFEASIBLE, message=f"{engine} proved the MILP infeasible", extra=extra)
        if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            timed_out = time_limit is not None and solver.wall_time() >= 0.95 * time_limit * 1000
            if timed_out:
                return time_limit_fallback(compiled, None, engine)
            status = Status.NO_SOLUTION if timed_out else Status.ERROR
            return Outcome(status, limit="time" if timed_out else None,
                           message=f"{engine} stopped with status {code}", extra=extra)
        values = np.array([v.solution_value() for v in x[: model.n_x]])
        option, repaired = polish(compiled, model.option_from_x(values))
        if repaired and not is_feasible(compiled, option):
            return unrepairable(compiled, engine)
        bound = model.true_objective(objective.BestBound())
        bound -= 1e-9 * max(1.0, abs(bound))  # the engine's bound holds up to its feasibility tolerance
        if code == pywraplp.Solver.OPTIMAL and not repaired:
            return Outcome(Status.OPTIMAL, option=option, bound=bound, extra=extra)
        note = (f"{engine}'s answer broke a budget within its feasibility tolerance and was repaired"
                if repaired else f"{engine} stopped at the time limit")
        return Outcome(Status.FEASIBLE, option=option, bound=bound,
                       limit="time" if code != pywraplp.Solver.OPTIMAL else None, message=note, extra=extra)

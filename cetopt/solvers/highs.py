"""Exact MILP through HiGHS (``highspy``), on the reduced, scaled model of :mod:`cetopt.solvers.mip`.

HiGHS is warm-started with the greedy incumbent, given only the time left, runs with its log off, and
stops cleanly on Ctrl-C (highspy's interrupt handling), returning its incumbent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.mip import Verdict, check_warm_start, conclude, prepare
from cetopt.solvers.result import Outcome


def native_status_table() -> dict[Any, Verdict]:
    """HiGHS model status -> verdict (statuses not listed are errors)."""
    import highspy

    status = highspy.HighsModelStatus
    return {
        status.kOptimal: Verdict.OPTIMAL,
        status.kInfeasible: Verdict.INFEASIBLE,
        status.kTimeLimit: Verdict.TIME,
        status.kInterrupt: Verdict.INTERRUPTED,
        status.kSolutionLimit: Verdict.FEASIBLE,
        status.kIterationLimit: Verdict.FEASIBLE,
        status.kObjectiveBound: Verdict.FEASIBLE,
        status.kObjectiveTarget: Verdict.FEASIBLE,
    }


@dataclass(frozen=True)
class HighsOptions:
    """Options of the highs backend.

    Attributes:
        mip_rel_gap: relative gap at which HiGHS stops (1e-7: inside cetopt's GAP_TOLERANCE of 1e-6).
        presolve: run HiGHS presolve.
        threads: HiGHS threads (0 = its default).
        warm_start: the incumbent that seeds reduced-cost fixing and the engine's start: "dp" (the dp
            backend's plan where dp applies; far fewer options survive fixing) or "greedy" (to check dp).
    """

    mip_rel_gap: float = 1e-7
    presolve: bool = True
    threads: int = 1
    warm_start: str = "dp"

    def __post_init__(self) -> None:
        check_warm_start("highs", self.warm_start)


class HighsSolver(Solver):
    """Branch-and-cut MILP (HiGHS via highspy) on the reduced linear form; exact, interactions linearised."""

    name = "highs"
    description = "HiGHS MILP via highspy: reduced, scaled, warm-started (exact; RLT-linearised interactions)"
    requires = ("highspy",)
    install_hint = "pip install 'highspy==1.11.0'"
    capabilities = Capabilities(exact=True, proves_bound=True, interactions=True)
    Options = HighsOptions

    def run(self, compiled: CompiledProblem, options: HighsOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        import highspy

        prepared = prepare(compiled, time_limit, warm_start=options.warm_start)
        model = prepared.linear_model()
        h = highspy.Highs()
        for key, value in (("output_flag", False), ("log_to_console", False), ("mip_rel_gap", options.mip_rel_gap),
                           ("mip_abs_gap", 0.0), ("presolve", "on" if options.presolve else "off"),
                           ("random_seed", int(seed) % 2**31), ("threads", options.threads)):
            h.setOptionValue(key, value)
        h.passModel(_highs_lp(highspy, model))
        start = prepared.warm_start(model)
        if start is not None:
            solution = highspy.HighsSolution()
            solution.col_value = start.tolist()
            solution.value_valid = True
            h.setSolution(solution)
        remaining = prepared.deadline.remaining()
        if remaining is not None:
            h.setOptionValue("time_limit", float(remaining))
        out_of_time = _solve_until(h, prepared.deadline)
        code = h.getModelStatus()
        verdict = native_status_table().get(code, Verdict.ERROR)
        if out_of_time and verdict is Verdict.INTERRUPTED:  # our deadline tripped the interrupt, not Ctrl-C
            verdict = Verdict.TIME
        info = h.getInfo()
        extra = {"native_status": h.modelStatusToString(code), "mip_gap": float(info.mip_gap)}
        values = np.asarray(h.getSolution().col_value, dtype=np.float64)
        feasible = int(highspy.SolutionStatus.kSolutionStatusFeasible)
        has_plan = int(info.primal_solution_status) == feasible and values.size == model.n_vars
        choice = model.option_from_x(values) if has_plan else None
        raw_bound = float(info.mip_dual_bound)
        bound = model.true_objective(raw_bound) if np.isfinite(raw_bound) and verdict is not Verdict.ERROR else None
        return conclude(prepared, "HiGHS", verdict, choice, bound, extra)


def _solve_until(h: Any, deadline: Any) -> bool:
    """Run HiGHS in highspy's solver thread and cancel it (through its user-interrupt callback) once the deadline
    has passed: HiGHS' own time limit is checked only between phases, which on a loaded machine overran a 3 s
    limit by seconds. Ctrl-C cancels the same way; HiGHS then stops with its incumbent. Returns whether the
    deadline (not Ctrl-C) cancelled the run."""
    h.HandleKeyboardInterrupt = True  # also enables the user-interrupt callback that cancelSolve() trips
    thread = h.startSolve()
    out_of_time = False
    try:
        while not h.wait(0.02)[0]:
            if deadline.expired():
                out_of_time = True
                h.cancelSolve()
                break
    except KeyboardInterrupt:
        h.cancelSolve()
    thread.join()
    return out_of_time


def _highs_lp(highspy: Any, model: Any) -> Any:
    """The LinearModel as a HighsLp (column-wise matrix, 0/1 bounds, x integral)."""
    import scipy.sparse as sp

    matrix = sp.vstack([model.a_eq, model.a_ub]).tocsc()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = model.n_vars, matrix.shape[0]
    lp.col_cost_ = model.c
    lp.col_lower_ = np.zeros(model.n_vars)
    lp.col_upper_ = np.ones(model.n_vars)
    # a hair of slack absorbs the row normalisation's rounding; solve() re-checks every budget exactly
    upper_ub = model.b_ub + 1e-12 * np.maximum(1.0, np.abs(model.b_ub))
    lp.row_lower_ = np.concatenate([model.b_eq, np.full(model.a_ub.shape[0], -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([model.b_eq, upper_ub])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr
    lp.a_matrix_.index_ = matrix.indices
    lp.a_matrix_.value_ = matrix.data
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = model.n_vars, matrix.shape[0]
    integrality = [highspy.HighsVarType.kContinuous] * model.n_vars
    integrality[: model.n_x] = [highspy.HighsVarType.kInteger] * model.n_x
    lp.integrality_ = integrality
    return lp

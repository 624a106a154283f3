"""``cetopt.solve``: one call for every backend, with the answer re-checked against the problem."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from cetopt._versions import package_versions

from cetopt.errors import UnsupportedProblemError
from cetopt.problem.compiled import CompiledProblem, compile_problem
from cetopt.problem.evaluate import BUDGET_RTOL, evaluate
from cetopt.problem.feasibility import budget_shortfalls
from cetopt.problem.model import AllocationProblem, Minimize
from cetopt.solvers.base import Solver
from cetopt.solvers.config import SolverConfig, load_solver_config
from cetopt.solvers.registry import get_solver
from cetopt.solvers.quiet import native_stdout_silenced
from cetopt.solvers.result import GAP_TOLERANCE, Outcome, SolveInterrupted, SolveResult, Status, relative_gap

log = logging.getLogger(__name__)

DEFAULT_SOLVER = "dp"  # where it applies (one resource, no interactions); else FALLBACK_SOLVER
FALLBACK_SOLVER = "highs"


def default_solver(problem: AllocationProblem) -> str:
    """dp where it applies (one resource budget, no interaction terms), else the HiGHS MILP."""
    return DEFAULT_SOLVER if not get_solver(DEFAULT_SOLVER).unsupported(compile_problem(problem)) else FALLBACK_SOLVER


def _resolve(solver: str | Path | SolverConfig | Solver, time_limit: float | None, seed: int | None,
             options: dict[str, Any]) -> tuple[Solver, str, dict[str, Any], float | None, int]:
    if isinstance(solver, Path) or (isinstance(solver, str) and solver.endswith(".toml")):
        solver = load_solver_config(solver)
    if isinstance(solver, SolverConfig):
        merged = {**solver.options, **options}
        limit = time_limit if time_limit is not None else solver.time_limit
        return get_solver(solver.backend), solver.name, merged, limit, solver.seed if seed is None else seed
    backend = solver if isinstance(solver, Solver) else get_solver(solver)
    return backend, backend.name, options, time_limit, 0 if seed is None else seed


def solve(problem: AllocationProblem, solver: str | Path | SolverConfig | Solver | None = None, *,
          time_limit: float | None = None, seed: int | None = None, check_budgets: bool = True,
          started: float | None = None, **options: Any) -> SolveResult:
    """Solve ``problem`` with a backend and return a checked :class:`SolveResult`.

    Args:
        problem: the allocation problem.
        solver: a backend name ("ortools", "ortools-mip", "highs", "cvxpy", "greedy", "dp", ...), a solver
            config (a ``solvers/*.toml`` path or a SolverConfig), or a Solver instance; None picks
            :func:`default_solver` (dp where it applies).
        time_limit: wall-clock seconds for the backend; the best feasible answer is returned with its gap.
        seed: random seed for backends that use one.
        check_budgets: report budgets that are unattainable on their own at once, with the smallest
            feasible value, without calling the backend.
        started: ``time.perf_counter()`` from which ``time_limit`` counts (default: this call). The command
            line passes its process's start, less a reserve for writing the result, so the whole process
            ends within the limit, reading the problem file included (cetopt.solvers.deadline).
        **options: backend options (unknown names raise SolverOptionError).

    Returns:
        A SolveResult whose objective, size and feasibility were recomputed from the problem.

    Raises:
        ProblemError: the problem is inconsistent (e.g. tied layers share no bit-width).
        SolverOptionError: unknown solver or option.
        SolverUnavailableError: the backend's package is missing (the message has the install command).
        UnsupportedProblemError: the backend cannot take this problem (the message says what it lacks).
        SolveInterrupted: Ctrl-C; its ``result`` holds the greedy incumbent (limit "interrupted"), if any.
    """
    if solver is None:
        solver = default_solver(problem)
    entered = time.perf_counter() if started is None else min(started, time.perf_counter())
    backend, display, raw_options, limit, run_seed = _resolve(solver, time_limit, seed, dict(options))
    backend.ensure_installed()
    typed = backend.make_options(raw_options)
    recorded = {**dataclasses.asdict(typed), "time_limit": limit, "seed": run_seed}
    compiled = compile_problem(problem)
    reasons = backend.unsupported(compiled)
    if reasons:
        raise UnsupportedProblemError(display, reasons)
    if check_budgets:
        shortfalls = budget_shortfalls(compiled)
        if shortfalls:
            outcome = Outcome(status=Status.INFEASIBLE, message="; ".join(shortfalls))
            return finish(compiled, outcome, solver=display, options=recorded, seconds=0.0)
    start = time.perf_counter()
    # the limit counts from this call (or ``started``): compiling the problem is part of it
    left = None if limit is None else limit - (start - entered)
    if left is not None and left < max(ENGINE_ROOM * limit, backend.startup_seconds_per_group * compiled.n_groups):
        outcome = _started_too_late(compiled, display, limit, left)
        return finish(compiled, outcome, solver=display, options=recorded, seconds=time.perf_counter() - start)
    left = max(left, 0.05) if left is not None else None
    outcome = _run_backend(backend, compiled, typed, left, run_seed, recorded, display)
    result = finish(compiled, outcome, solver=display, options=recorded, seconds=time.perf_counter() - start)
    if result.limit == "interrupted":  # the engine caught Ctrl-C itself and stopped with its incumbent
        raise SolveInterrupted(result)
    return result


def _started_too_late(compiled: CompiledProblem, display: str, limit: float, left: float) -> Outcome:
    """The limit was spent before the backend could start (a large file, a slow start-up): building the backend's
    model alone would overrun, so the greedy incumbent (milliseconds) is the answer, logged at INFO."""
    outcome = _spent(compiled, f"the time limit ({limit:g} s) was {100 * (1 - left / limit):.0f}% spent before "
                               f"{display} could start (reading and compiling the problem)")
    log.info("%s: %s", display, outcome.message)
    return outcome


def _run_backend(backend: Solver, compiled: CompiledProblem, typed: Any, left: float | None, seed: int,
                 recorded: dict[str, Any], display: str) -> Outcome:
    """``backend.run`` with native output silenced: a crash becomes an ERROR outcome naming the exception, Ctrl-C
    a SolveInterrupted holding the greedy incumbent (MemoryError propagates: nothing sensible can be built)."""
    start = time.perf_counter()
    try:
        with native_stdout_silenced():
            return backend.run(compiled, typed, time_limit=left, seed=seed)
    except KeyboardInterrupt:
        seconds = time.perf_counter() - start
        raise SolveInterrupted(_interrupted(compiled, solver=display, options=recorded, seconds=seconds)) from None
    except MemoryError:
        raise
    except Exception as err:  # a backend crash is reported as an ERROR result, with the exception named
        log.exception("backend %s failed", display)
        return Outcome(status=Status.ERROR, message=f"{type(err).__name__}: {err}")


ENGINE_ROOM = 0.1  # below this fraction of the limit left, the backend is not started (cetopt.solvers.deadline)


def _spent(compiled: CompiledProblem, why: str) -> Outcome:
    """The greedy incumbent as the answer when no time is left for the backend (limit "time")."""
    from cetopt.solvers.incumbent import greedy_incumbent

    incumbent = greedy_incumbent(compiled)
    if incumbent.feasible:
        return Outcome(Status.FEASIBLE, choice_index=incumbent.choice_index, bound=incumbent.plan.bound,
                       limit="time", message=f"{why}; returning the greedy incumbent with its bound")
    return Outcome(Status.NO_SOLUTION, limit="time", message=f"{why}; the greedy walk found no feasible allocation")


def _interrupted(compiled: CompiledProblem, *, solver: str, options: dict[str, Any], seconds: float) -> SolveResult:
    """The result handed back on Ctrl-C: the greedy incumbent (it takes milliseconds), else no plan."""
    from cetopt.solvers.incumbent import greedy_incumbent

    try:
        incumbent = greedy_incumbent(compiled)
    except KeyboardInterrupt:
        incumbent = None
    if incumbent is not None and incumbent.feasible:
        outcome = Outcome(Status.FEASIBLE, choice_index=incumbent.choice_index, bound=incumbent.plan.bound,
                          limit="interrupted", message="interrupted; returning the greedy incumbent")
    else:
        outcome = Outcome(Status.NO_SOLUTION, limit="interrupted", message="interrupted before any allocation")
    return finish(compiled, outcome, solver=solver, options=options, seconds=seconds)


def _bound_tolerance(objective: float, bound: float, unit: float) -> float:
    """How far a backend's bound may sit above its own objective before it is called an error: float noise
    relative to the values, plus 1e-12 of the loss unit for sums that cancel to about 0."""
    return 1e-9 * max(abs(objective), abs(bound)) + 1e-12 * unit


def _trivial_bound(compiled: CompiledProblem) -> float:
    """The separable floor (each group at its least objective, each interaction at its least entry): a
    valid bound on every allocation, so a backend's weaker bound never hides a plan at that floor."""
    from cetopt.problem.feasibility import floors

    low = floors(compiled)
    return low.size_bits if compiled.minimize is Minimize.SIZE else low.loss * compiled.loss_unit


def _bits_of(problem: AllocationProblem, choices: dict[str, int]) -> dict[str, int]:
    """Layer name -> bit-width of its chosen choice (from the arrays when the layers are columns)."""
    columns = problem.columns
    if columns is None:
        return {name: problem.layer(name).choices[i].bits for name, i in choices.items()}
    picked = np.fromiter((choices[name] for name in columns.names), np.int64, len(columns))
    return dict(zip(columns.names, columns.bits[columns.chosen(picked)].tolist()))


def finish(compiled: CompiledProblem, outcome: Outcome, *, solver: str, options: dict[str, Any],
           seconds: float) -> SolveResult:
    """Score a backend's Outcome against the problem and build the SolveResult."""
    problem = compiled.problem
    status, message, bound = outcome.status, outcome.message, outcome.bound
    if bound is not None and compiled.minimize is Minimize.LOSS:
        bound = bound * compiled.loss_unit  # backends work in the compiled loss units
    fields: dict[str, Any] = dict(bits={}, choices={}, objective=None, loss=None, size_bits=None, avg_bits=None,
                                  ratio=None, bops=None)
    if outcome.choice_index is not None and status in (Status.OPTIMAL, Status.FEASIBLE):
        option = np.asarray(outcome.choice_index, dtype=np.int64)
        bad = option.shape != (compiled.n_groups,) or bool(((option < 0) | (option >= compiled.option_counts)).any())
        if bad:
            status, message = Status.ERROR, f"backend returned malformed option indices; {message}"
        else:
            choices = compiled.to_choices(option)
            score = evaluate(problem, choices)
            fields.update(
                bits=_bits_of(problem, choices), choices=choices,
                objective=score.objective, loss=score.loss, size_bits=score.size_bits, avg_bits=score.avg_bits,
                ratio=score.ratio, bops=score.bops)
            if score.violations:
                status = Status.ERROR
                message = f"backend returned an infeasible allocation ({'; '.join(score.violations)}); {message}"
            elif bound is not None and bound > score.objective + _bound_tolerance(
                    score.objective, bound, compiled.loss_unit if compiled.minimize is Minimize.LOSS else 1.0):
                status = Status.ERROR
                message = (f"backend error: its bound {bound:.10g} exceeds the objective {score.objective:.10g} "
                           f"of its own plan; {message}")
    elif status in (Status.OPTIMAL, Status.FEASIBLE):
        status, message = Status.ERROR, f"backend claimed {outcome.status.value} without an allocation; {message}"
    if status is Status.INFEASIBLE and not message:
        message = "no allocation meets all budgets together (each budget alone is attainable)"
    objective = fields["objective"]
    if bound is not None and objective is not None and status is not Status.ERROR:
        bound = max(bound, _trivial_bound(compiled))
        bound = min(bound, objective)  # float noise from a backend may put a proven bound a hair above
    gap = relative_gap(objective, bound) if status is not Status.ERROR else None
    if status is Status.OPTIMAL and (gap is None or gap > GAP_TOLERANCE):
        status = Status.FEASIBLE
        shown = "no certified bound" if gap is None else f"certified relative gap {gap:.2e}"
        message = (f"the backend reported optimal, but {shown} is above the tolerance {GAP_TOLERANCE:g}; "
                   f"{message}").strip()
    return SolveResult(
        status=status, bound=bound, gap=gap, seconds=seconds, solver=solver, options=options,
        limit=outcome.limit, message=message.strip().strip(";").strip(), problem=problem.name,
        extra=dict(outcome.extra), versions=package_versions(), **fields)


__all__ = ["BUDGET_RTOL", "DEFAULT_SOLVER", "FALLBACK_SOLVER", "default_solver", "finish", "solve"]

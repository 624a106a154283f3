"""``run_search``: one call for every strategy, seeded by the exact solvers and re-checked against the problem.

The search is a solver-like stage over the same problem: it starts from the surrogate's exact optimum, the exact
solver's k best, every installed backend's plan and the caller's plans (the baselines), spends a budget of
forward passes and seconds measuring plans on calibration batches, measures its finalists (always including the
surrogate's optimum) on validation, and returns the best there, checked by the problem model like any solver's
answer. Nothing here imports torch: the measurement is injected (:mod:`cetopt.search.torch_measure` makes it
from a model).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from cetopt.errors import ProblemError
from cetopt.problem.compiled import compile_problem
from cetopt.problem.evaluate import evaluate
from cetopt.problem.model import AllocationProblem
from cetopt.search.base import DEFAULT_STRATEGY, PlanMeasurement, SearchBudget, SearchResult, Seed, Seeding
from cetopt.search.evaluator import BudgetSpent, Evaluator, option_key, option_of
from cetopt.search.registry import get_strategy

log = logging.getLogger(__name__)

DEFAULT_FORWARDS = 400  # forward passes; see benchmarks/results/search.md for the budget curve
BACKEND_TIME_LIMIT = 10.0  # seconds per backend when the seeds are gathered (they take milliseconds on the zoo)


def backend_plans(problem: AllocationProblem, *, time_limit: float = BACKEND_TIME_LIMIT,
                  skip: Sequence[str] = ()) -> dict[str, Mapping[str, int]]:
    """Every installed backend's plan of ``problem`` (backend name -> layer -> choice index), from the solver
    registry: backends that cannot take the problem, are not installed or find no feasible plan are left out
    (logged at INFO)."""
    from cetopt.solvers.api import solve
    from cetopt.solvers.registry import available_solvers, get_solver

    compiled = compile_problem(problem)
    out: dict[str, Mapping[str, int]] = {}
    for info in available_solvers():
        if info.name in skip:
            continue
        if not info.installed:
            log.info("backend %s is not installed: its plan is left out of the pool", info.name)
            continue
        reasons = get_solver(info.name).unsupported(compiled)
        if reasons:
            log.info("backend %s cannot take %s (%s): its plan is left out", info.name, problem.name, reasons[0])
            continue
        result = solve(problem, info.name, time_limit=time_limit)
        if result.success:
            out[info.name] = dict(result.choices)
        else:
            log.info("backend %s found no plan (%s): left out", info.name, result.status.value)
    return out


def _seeds(problem: AllocationProblem, evaluator: Evaluator, optimum_choices: Mapping[str, int], optimum_label: str,
           seeding: Seeding) -> tuple[list[Seed], dict[str, str]]:
    """The seeds in order (the surrogate's optimum first) and what became of each label."""
    from cetopt.solvers.k_best import k_best

    labelled: list[tuple[str, Mapping[str, int]]] = [(optimum_label, optimum_choices)]
    if seeding.k > 1:
        labelled += [(f"{optimum_label}#{p.rank}", p.choices) for p in k_best(problem, seeding.k)[1:]]
    if seeding.backends:
        labelled += list(backend_plans(problem, skip=(optimum_label,)).items())
    labelled += list(seeding.extra.items())
    seeds: list[Seed] = []
    fate: dict[str, str] = {}
    where: dict[tuple[int, ...], str] = {}
    for label, choices in labelled:
        option = option_of(evaluator, choices)
        if option is None or not evaluator.feasible(option):
            fate[label] = "left out: not a feasible plan of the problem"
            log.info("search seed %s is not a feasible plan of %s: left out", label, problem.name)
            continue
        key = option_key(option)
        if key in where:
            fate[label] = f"same as {where[key]}"
            continue
        where[key] = label
        fate[label] = "seed"
        seeds.append(Seed(label=label, option=option))
    return seeds, fate


def run_search(problem: AllocationProblem, measurement: PlanMeasurement, *, strategy: str = DEFAULT_STRATEGY,
               budget: SearchBudget = SearchBudget(DEFAULT_FORWARDS), seeding: Seeding = Seeding(),
               options: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = False) -> SearchResult:
    """Search ``problem``'s plans by measuring them (see the module docstring).

    Args:
        measurement: how plans are measured: calibration batches and, optionally, validation and its cost.
        strategy: a registered strategy (:func:`cetopt.search.registry.strategy_names`).
        budget: forward passes (validation included) and seconds.
        seeding: where the search starts besides the surrogate's optimum (k best, backends' plans, extra plans).
        options: the strategy's options (its ``Options`` dataclass fields).
        seed: the random seed (mutations, batch orders).

    Raises:
        ProblemError: the budget cannot measure even one plan (field "search_forwards"), no feasible plan
            (field "problem"), unknown strategy or options (field "search" / "search_options").
    """
    _check_budget(measurement, budget)
    engine = get_strategy(strategy)
    typed = _typed_options(engine, strategy, options)
    start = time.perf_counter()
    solver, optimum = _surrogate_optimum(problem, seeding.solver)
    finalists = max(1, min(budget.finalists, budget.forwards // measurement.per_plan))
    evaluator = Evaluator(compile_problem(problem), measurement,
                          forwards=budget.forwards - finalists * measurement.per_plan, seconds=budget.seconds,
                          progress=progress, total_forwards=budget.forwards)
    starting, fate = _seeds(problem, evaluator, optimum.choices, solver, seeding)
    try:
        try:
            contenders = engine.search(evaluator, starting, typed, np.random.default_rng(seed))
            stopped = "converged"
        except BudgetSpent as spent:
            contenders, stopped = evaluator.ranked(), spent.why
        search_seconds = evaluator.seconds
        evaluator.search_phase = False
        scored = _final_selection(evaluator, starting[0].option, contenders, finalists)
    finally:
        evaluator.close()
    value, _, winner, calibration, validation = min(scored, key=lambda s: (s[0], s[1]))
    choices = evaluator.choices(winner)
    score = evaluate(problem, choices)
    if score.violations:  # a strategy bug; never hand such a plan on
        raise ProblemError(f"search strategy {strategy} produced an infeasible plan: {'; '.join(score.violations)}",
                           field="search")
    labels = {option_key(s.option): s.label for s in starting}
    return SearchResult(
        strategy=strategy, choices=choices, bits={n: problem.layer(n).choices[i].bits for n, i in choices.items()},
        calibration_dloss=calibration, validation_dloss=validation,
        selected_on="validation" if measurement.validate is not None else "calibration",
        predicted_loss=float(score.loss), size_bits=float(score.size_bits),
        surrogate_optimum=float(optimum.objective),  # type: ignore[arg-type]
        surrogate_bound=optimum.bound, surrogate_measured=scored[0][0], forwards=evaluator.forwards,
        seconds=time.perf_counter() - start, history=tuple(evaluator.history),
        provenance={"seeds": fate, "descends_from": labels.get(option_key(winner), "search"), "stopped": stopped,
                    "search_seconds": search_seconds, "finalists": len(scored), "seed": seed, "solver": solver,
                    "budget": dataclasses.asdict(budget), "options": dataclasses.asdict(typed),
                    "plans_measured": evaluator.describe()["plans_measured"], "n_batches": measurement.n_batches})


def _surrogate_optimum(problem: AllocationProblem, solver: str | None) -> tuple[str, Any]:
    """The exact backend's name (None: dp where it applies) and its optimum of the surrogate (a SolveResult).

    Raises:
        ProblemError: the surrogate has no feasible plan (field "problem").
    """
    from cetopt.solvers.api import default_solver, solve

    solver = solver or default_solver(problem)
    optimum = solve(problem, solver)
    if not optimum.success:
        raise ProblemError(f"the surrogate has no feasible plan ({optimum.status.value}: {optimum.message}); "
                           "loosen the budget", field="problem")
    return solver, optimum


def _check_budget(measurement: PlanMeasurement, budget: SearchBudget) -> None:
    """Refuse a search that cannot measure one plan, or a non-positive time limit."""
    n_batches, per_plan = measurement.n_batches, measurement.per_plan
    if n_batches < 1:
        raise ProblemError("the search needs at least one calibration batch", field="n_batches")
    if budget.forwards < per_plan:
        raise ProblemError(f"a search budget of {budget.forwards} forward passes cannot measure even one plan "
                           f"({n_batches} calibration + {per_plan - n_batches} validation passes); give at least "
                           f"{per_plan}", field="search_forwards")
    if budget.seconds is not None and budget.seconds <= 0:
        raise ProblemError(f"the search's time limit must be > 0 seconds, got {budget.seconds}", field="search_seconds")


def _typed_options(engine: Any, strategy: str, options: Mapping[str, Any] | None) -> Any:
    """``options`` as the strategy's ``Options`` dataclass; an unknown field names the known ones."""
    try:
        return engine.Options(**dict(options or {}))
    except TypeError as err:
        known = ", ".join(f.name for f in dataclasses.fields(engine.Options))
        raise ProblemError(f"{strategy}: {err}; its options are {known}", field="search_options") from None


def _final_selection(evaluator: Evaluator, optimum: np.ndarray, contenders: Sequence[np.ndarray],
                     finalists: int) -> list[tuple[float, int, np.ndarray, float, float | None]]:
    """The surrogate's optimum and the first distinct contenders (then the best measured), at most ``finalists``,
    each measured on the whole calibration set and on validation: (selection value, rank, option, calibration,
    validation); the selection value is the validation loss change where there is one."""
    final = [optimum]
    for option in list(contenders) + evaluator.ranked():
        if len(final) >= finalists:
            break
        if option_key(option) not in {option_key(f) for f in final}:
            final.append(np.asarray(option))
    scored = []
    for i, option in enumerate(final):
        calibration = evaluator.full(option)
        validation = evaluator.validated(option)
        scored.append((validation if validation is not None else calibration, i, option, calibration, validation))
    evaluator.note(min(scored, key=lambda s: (s[0], s[1]))[2], "final selection")
    return scored

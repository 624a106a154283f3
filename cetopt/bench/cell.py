"""One bench cell: a problem at a budget, solved by one solver configuration (or a baseline allocation),
scored, and, when the problem's model is in the zoo, applied to the model and measured."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cetopt._versions import package_versions
from cetopt.fingerprint import FingerprintMismatchError, check_fingerprint, fingerprint_spec, recorded
from cetopt.bench.store import encode_outcomes
from cetopt.problem.evaluate import choices_from_bits, evaluate
from cetopt.problem.io import load_problem
from cetopt.problem.model import AllocationProblem, Budget

BASELINES = ("uniform", "hawq-v3")


@dataclass(frozen=True)
class Cell:
    """What one cell runs.

    Attributes:
        problem: path of the problem file.
        solver: a solver config path (solvers/*.toml), a backend name, or a baseline ("uniform", "hawq-v3").
        budget_avg_bits: the average-bits budget that replaces the file's budget.
        time_limit: seconds per solve (the config's own limit wins when it is smaller).
        measure: apply the plan to the zoo model and measure its metric.
        reextract: when the problem's recorded fingerprint differs from the local zoo model's, rebuild the
            problem on the local model (its recorded recipe, cetopt.recipe.Recipe.from_metadata, and budget)
            instead of refusing.
        models: model targets the user typed (``cetopt bench --model``): a problem whose recorded model is not a
            zoo name is measured only when it records one of these (the target inside a file is never imported).
    """

    problem: str
    solver: str
    budget_avg_bits: float
    time_limit: float = 60.0
    measure: bool = True
    reextract: bool = False
    models: tuple[str, ...] = ()

    @property
    def solver_name(self) -> str:
        return Path(self.solver).stem if self.solver.endswith(".toml") else self.solver

    @property
    def problem_name(self) -> str:
        return Path(self.problem).stem


def versions() -> str:
    """Installed versions of cetopt and the numerical stack, as a JSON string (recorded in every row)."""
    return json.dumps(package_versions(), sort_keys=True)


@lru_cache(maxsize=4)
def _task(model: str, fold: bool = False, objective: str | None = None) -> Any:
    """The zoo spec ``model`` (with ``objective``, as load_model_spec); with ``fold``, its BatchNorms folded (a
    problem built with extract --fold-bn)."""
    from cetopt.modelspec import load_model_spec

    spec = load_model_spec(model, objective=objective)
    if fold:
        from cetopt.quant.fold import fold_spec

        spec = fold_spec(spec)
    return spec


def _folded(problem: AllocationProblem) -> bool:
    """Whether ``problem`` was built on its model with the BatchNorms folded (cetopt.quant.fold.FOLD_KEY)."""
    return bool(problem.metadata.get("fold_bn"))


@lru_cache(maxsize=4)
def _measurer(model: str, fold: bool = False) -> Any:
    from cetopt.measure import Measurer

    return Measurer(_task(model, fold))


@lru_cache(maxsize=8)
def _hawq_priced(model: str, recipe: Any, fold: bool = False) -> Any:
    """HAWQ-V3's priced problem of ``model`` on the compared problem's candidates (``recipe``, priced by hawq-v3),
    built once for every budget."""
    from cetopt.builders.second_order import build

    return build(_task(model, fold), recipe.priced_by("hawq-v3"))


def _recipe(problem: AllocationProblem) -> Any:
    """The recipe ``problem`` was built with (cetopt.recipe.Recipe.from_metadata); for a problem that records no
    build provenance, the default recipe on its candidate widths and grid (logged at INFO)."""
    import logging

    from cetopt.errors import ProblemError
    from cetopt.quant.plan import problem_quantizer
    from cetopt.recipe import DEFAULT_RECIPE, Recipe

    try:
        return Recipe.from_metadata(problem.metadata)
    except ProblemError:
        bits = tuple(sorted({c.bits for layer in problem.layers for c in layer.choices}))
        logging.getLogger(__name__).info("%s records no recipe: its baselines use the default recipe on its candidate "
                                         "widths %s and grid", problem.name, bits)
        return DEFAULT_RECIPE.replace(bits=bits, quantizer=problem_quantizer(problem))


def _recorded_model(problem: AllocationProblem) -> str | None:
    model = problem.metadata.get("model_target") or problem.metadata.get("model")
    return model if isinstance(model, str) and model else None


def _measurable(problem: AllocationProblem, models: tuple[str, ...] = ()) -> str | None:
    """The model to load for ``problem``: its recorded model when that is a zoo name (a registry lookup), else
    the one of ``models`` (targets the user typed) it records, else None. A ``module:function`` or
    ``file.py:function`` written in the problem file is never imported on the file's word."""
    from cetopt.modelspec import same_target
    from cetopt.zoo.registry import is_zoo_name

    recorded = _recorded_model(problem)
    if recorded is None:
        return None
    if is_zoo_name(recorded):
        return recorded
    return next((m for m in models if same_target(m, recorded)), None)


def _unmeasured_note(problem: AllocationProblem, models: tuple[str, ...]) -> str:
    """Why a problem's model is not loaded (empty when it is, or when the problem records none)."""
    recorded = _recorded_model(problem)
    if recorded is None or ":" not in recorded or _measurable(problem, models) is not None:
        return ""  # no model, a bare name (e.g. a published problem's "resnet18"), or loaded
    return (f"model {recorded!r:.200} recorded in the problem is not a zoo model and is never imported from a file; "
            "pass it with cetopt bench --model TARGET to measure it")


@lru_cache(maxsize=8)
def _reextracted(path: str, model: str) -> AllocationProblem:
    """The problem file ``path`` rebuilt on the local zoo model: its recorded recipe (cost model, candidates, grid,
    rounding, interactions, ...: cetopt.recipe.Recipe.from_metadata) and its budget."""
    from cetopt.builders.second_order import build
    from cetopt.errors import ProblemError
    from cetopt.modelspec import objective_of
    from cetopt.recipe import Recipe

    base = load_problem(path)
    try:
        recipe = Recipe.from_metadata(base.metadata)
    except ProblemError as err:
        raise FingerprintMismatchError(f"{path}: cannot re-extract: {err}", fields=()) from None
    spec = _task(model, _folded(base), recipe.objective or objective_of(base.metadata))
    return build(spec, recipe, target=model).with_budget(base.budget).problem


def _same_model(cell: Cell, base: AllocationProblem) -> tuple[AllocationProblem, str | None]:
    """Both sides of a comparison from one model: refuse (or re-extract) a problem built on other weights.

    Returns the problem to use and the fingerprint recorded in the row (None when no zoo model is involved)."""
    model = _measurable(base, cell.models)
    if model is None or not (cell.measure or cell.solver == "hawq-v3"):
        return base, None
    try:
        # the layers digest over the problem's own layers: a default layer set that grew since (Embedding tables
        # joined it) leaves a problem built before valid for the layers it covers
        fp = check_fingerprint(base.metadata, _task(model, _folded(base)), what=f"problem {cell.problem}",
                               layers=[layer.name for layer in base.layers])
    except FingerprintMismatchError:
        if not cell.reextract:
            raise
        problem = _reextracted(cell.problem, model)
        return problem, f"{fingerprint_spec(_task(model, _folded(base))).short()} (re-extracted on this model)"
    return base, fp.short() if recorded(base.metadata) else f"{fp.short()} (problem file records none)"


def _empty_row(cell: Cell, problem: AllocationProblem) -> dict[str, Any]:
    from cetopt.bench.store import COLUMNS

    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(problem=cell.problem_name, model=problem.metadata.get("model", ""),
               method=problem.metadata.get("method", ""), layers=len(problem.layers), solver=cell.solver_name,
               budget_avg_bits=cell.budget_avg_bits, versions=versions(), message="")
    return row


def _baseline_bits(cell: Cell, problem: AllocationProblem) -> tuple[dict[str, int] | None, str]:
    from cetopt.baselines import hawq_v3_bits, uniform_bits

    b = cell.budget_avg_bits
    if cell.solver == "uniform":
        bits = uniform_bits(problem, b)
        return (bits, "") if bits is not None else (None, f"uniform needs {b:g} among every layer's candidate bits")
    model = _measurable(problem, cell.models)
    if model is None:
        return None, ("hawq-v3 baseline needs the problem's model to extract traces from: "
                      + (_unmeasured_note(problem, cell.models) or "the problem records none (metadata model_target)"))
    # a baseline row is applied as a plain plan (bits on the problem's grid, rounded to nearest): priced the same way
    recipe = _recipe(problem)
    bits = recipe.bits if recipe.levels is None else recipe.levels.bits
    recipe = recipe.replace(bits=bits, levels=None, rounding="nearest", group_sizes=None)
    hawq = _hawq_priced(model, recipe, _folded(problem)).with_budget(problem.budget).problem
    bits = hawq_v3_bits(hawq, b)
    if bits is None:
        return None, "hawq-v3 problem: infeasible at this budget"
    return dict(bits), ""


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell and return its row (every column of cetopt.bench.store.COLUMNS)."""
    from cetopt.solvers.api import solve

    start = time.perf_counter()
    base, fingerprint = _same_model(cell, load_problem(cell.problem))
    problem = base.with_budget(Budget(avg_bits=cell.budget_avg_bits))
    row = _empty_row(cell, problem)
    row["fingerprint"] = fingerprint
    bits: dict[str, int] | None = None
    if cell.solver in BASELINES:
        row.update(kind="baseline", backend=cell.solver, options="{}")
        bits, message = _baseline_bits(cell, problem)
        if bits is None:
            row.update(status="skipped", message=message)
        else:
            score = evaluate(problem, choices_from_bits(problem, bits))
            row.update(status="feasible" if score.feasible else "infeasible", objective=score.objective,
                       size_bits=score.size_bits, avg_bits=score.avg_bits, seconds=0.0, message=message)
    else:
        result = solve(problem, cell.solver, time_limit=cell.time_limit)
        row.update(kind="solver", backend=result.solver, status=result.status.value,
                   limit=result.limit, objective=result.objective, bound=result.bound, gap=result.gap,
                   seconds=result.seconds, size_bits=result.size_bits, avg_bits=result.avg_bits,
                   options=json.dumps(result.options, sort_keys=True, default=str), message=result.message)
        bits = dict(result.bits) if result.success else None
    from cetopt.quant.pack import budget_left

    left = budget_left(problem, row["size_bits"])
    row["unused_avg_bits"] = None if left is None else left / problem.total_params
    if bits is not None:
        from cetopt.quant.pack import problem_packed_size
        from cetopt.quant.apply import apply_plan
        from cetopt.quant.plan import Plan, plan_from_result, problem_quantizer

        row["bits"] = json.dumps([bits[layer.name] for layer in problem.layers])
        plan = (plan_from_result(problem, result) if row["kind"] == "solver"
                else Plan(bits=bits, quantizer=problem_quantizer(problem)))
        packed = problem_packed_size(problem, plan)
        row["packed_ratio"] = packed.ratio if packed is not None else None
        model = _measurable(problem, cell.models) if cell.measure else None
        note = _unmeasured_note(problem, cell.models) if cell.measure else ""
        if note and row["kind"] == "solver":
            row["message"] = f"{row['message']}; {note}" if row["message"] else note
        if model is not None:
            from cetopt.artifact import plan_grams, plan_quadrics

            measurer = _measurer(model, _folded(problem))
            applied = apply_plan(measurer.spec.model, plan, quadrics=plan_quadrics(measurer.spec, plan),
                                 grams=plan_grams(measurer.spec, plan))
            measured = measurer.measure(applied.weights, validation=False, outcomes=True)
            metric_name, fp = next(iter(measurer.fp_metrics.items()), (None, None))
            row.update(metric_name=metric_name, metric=measured.metric, fp_metric=fp,
                       measured_dloss=measured.calibration_dloss, packed_ratio=applied.ratio,
                       outcomes=encode_outcomes(measured.outcomes) if measured.outcomes is not None else None)
    row["wall_seconds"] = time.perf_counter() - start
    return row

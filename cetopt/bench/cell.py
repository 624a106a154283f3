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
    """

    problem: str
    solver: str
    budget_avg_bits: float
    time_limit: float = 60.0
    measure: bool = True

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
def _task(model: str) -> Any:
    from cetopt.pipeline import load_task

    return load_task(model)


@lru_cache(maxsize=4)
def _fp_metric(model: str) -> tuple[str, float]:
    task = _task(model)
    name, value = next(iter(task.evaluate(task.model).items()))
    return name, float(value)


@lru_cache(maxsize=8)
def _hawq_problem(model: str, bits: tuple[int, ...]) -> AllocationProblem:
    from cetopt.pipeline import extract_problem

    return extract_problem(_task(model), bits=bits, method="hawq-v3")


def _measurable(problem: AllocationProblem) -> str | None:
    from cetopt.pipeline import ZOO_MODELS

    model = problem.metadata.get("model")
    if model in ZOO_MODELS and problem.metadata.get("rounding", "nearest") == "nearest":
        return str(model)
    return None


def _empty_row(cell: Cell, problem: AllocationProblem) -> dict[str, Any]:
    from cetopt.bench.store import COLUMNS

    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(problem=cell.problem_name, model=problem.metadata.get("model", ""),
               method=problem.metadata.get("method", ""), layers=len(problem.layers), solver=cell.solver_name,
               budget_avg_bits=cell.budget_avg_bits, versions=versions(), message="")
    return row


def _baseline_bits(cell: Cell, problem: AllocationProblem) -> tuple[dict[str, int] | None, str]:
    b = cell.budget_avg_bits
    if cell.solver == "uniform":
        if not float(b).is_integer() or any(int(b) not in [c.bits for c in layer.choices] for layer in problem.layers):
            return None, f"uniform needs {b:g} among every layer's candidate bits"
        return {layer.name: int(b) for layer in problem.layers}, ""
    model = problem.metadata.get("model")
    from cetopt.pipeline import ZOO_MODELS

    if model not in ZOO_MODELS:
        return None, "hawq-v3 baseline needs a zoo model to extract traces from"
    from cetopt.solvers.api import solve

    bits = tuple(sorted({c.bits for layer in problem.layers for c in layer.choices}))
    result = solve(_hawq_problem(str(model), bits).with_budget(Budget(avg_bits=b)), "dp")
    if not result.success:
        return None, f"hawq-v3 problem: {result.status.value} {result.message}"
    return dict(result.bits), ""


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell and return its row (every column of cetopt.bench.store.COLUMNS)."""
    from cetopt.solvers.api import solve

    start = time.perf_counter()
    base = load_problem(cell.problem)
    problem = base.with_budget(Budget(avg_bits=cell.budget_avg_bits))
    row = _empty_row(cell, problem)
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
    if bits is not None:
        row["bits"] = json.dumps([bits[layer.name] for layer in problem.layers])
        model = _measurable(problem) if cell.measure else None
        if model is not None:
            from cetopt.pipeline import measure

            metric_name, fp = _fp_metric(model)
            measured = measure(_task(model), bits)
            row.update(metric_name=metric_name, metric=float(measured["metric"]), fp_metric=fp,
                       measured_dloss=float(measured["measured_dloss"]), packed_ratio=float(measured["packed_ratio"]))
    row["wall_seconds"] = time.perf_counter() - start
    return row

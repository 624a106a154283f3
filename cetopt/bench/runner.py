"""Run a benchmark: every (problem, solver, budget) cell, resumable, optionally in parallel processes."""

from __future__ import annotations

import glob
import os
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cetopt.bench.cell import BASELINES, Cell, run_cell
from cetopt.bench.store import key_for, read_cell, write_cell, write_csv
from cetopt.errors import CetoptError, ProblemError


class BenchWorkerLost(CetoptError):
    """A worker process (or Dask worker) died while running cells; the finished cells are saved."""

QUICK_PROBLEMS = ("problems/digits/*.json", "problems/mnist1d/*.json", "problems/hawq-v3/resnet18-size0.5.json",
                  "problems/synthetic/*.json")
QUICK_SOLVERS = ("solvers/dp.toml", "solvers/greedy.toml", "solvers/highs.toml", "solvers/ortools.toml",
                 "solvers/cvxpy.toml", "solvers/waterfilling.toml")
QUICK_BUDGETS = (2.5, 3.0, 4.0, 5.0, 6.0)


@dataclass(frozen=True)
class BenchSpec:
    """A benchmark: problems x solvers x budgets (plus baseline allocations).

    Attributes:
        problems: problem files or glob patterns.
        solvers: solver config files (solvers/*.toml), globs, or backend names.
        budgets: average-bits budgets.
        baselines: baseline allocations added per problem and budget ("uniform", "hawq-v3").
        time_limit: seconds per solve.
        measure: measure zoo models' plans.
        models: model targets the user typed for problems that record a non-zoo model (cetopt.bench.cell.Cell).
    """

    problems: Sequence[str] = QUICK_PROBLEMS
    solvers: Sequence[str] = QUICK_SOLVERS
    budgets: Sequence[float] = QUICK_BUDGETS
    baselines: Sequence[str] = BASELINES
    time_limit: float = 60.0
    measure: bool = True
    models: Sequence[str] = ()

    def problem_files(self) -> list[str]:
        files: list[str] = []
        for pattern in self.problems:
            matched = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
            if not matched:
                raise ProblemError(f"no problem file matches {pattern!r} (run from the repository root, or pass "
                                   "--problems with paths)", field="problems")
            for path in matched:
                if not os.path.isfile(path):
                    raise ProblemError(f"problem file {path!r} does not exist", field="problems")
            files.extend(matched)
        return list(dict.fromkeys(files))

    def solver_names(self) -> list[str]:
        out: list[str] = []
        for item in self.solvers:
            out.extend(sorted(glob.glob(item)) if any(ch in item for ch in "*?[") else [item])
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ProblemError(f"unknown baseline {unknown[0]!r}; use {BASELINES}", field="baselines")
        return list(dict.fromkeys(out))

    def cells(self) -> list[Cell]:
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise ProblemError("budgets must be positive average bits, e.g. 2.5,3,4", field="budgets")
        return [Cell(problem=p, solver=s, budget_avg_bits=float(b), time_limit=self.time_limit, measure=self.measure,
                     models=tuple(self.models))
                for p in self.problem_files() for b in self.budgets for s in [*self.solver_names(), *self.baselines]]


@dataclass(frozen=True)
class BenchResult:
    """What a run did.

    Attributes:
        out: the results directory; rows: every row (old and new); ran / reused: cell counts.
        files: the files written (CSV, summary, plots).
    """

    out: Path
    rows: list[dict[str, Any]]
    ran: int
    reused: int
    files: list[Path] = field(default_factory=list)


def _run_in_worker(cell: Cell) -> tuple[Cell, dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    return cell, run_cell(cell)


def _worker_lost(err: BaseException) -> bool:
    """A worker process died (BrokenProcessPool) or Dask gave up on a task whose workers kept dying."""
    from concurrent.futures import BrokenExecutor

    return isinstance(err, BrokenExecutor) or type(err).__name__ == "KilledWorker"


def _run_on_executor(todo: list[Cell], out_dir: Path, executor: str | None, jobs: int,
                     finish: Callable[[Cell, dict[str, Any]], None]) -> None:
    """Run ``todo`` on the executor (cetopt.bench.executor), ``finish`` each row as it arrives; a lost worker stops
    the run with :class:`BenchWorkerLost` once the others are done (their cells saved)."""
    from cetopt.bench.executor import open_executor

    with open_executor(executor, jobs=jobs) as pool:
        futures = [pool.submit(_run_in_worker, cell) for cell in todo]
        lost: list[BaseException] = []
        for future in as_completed(futures):
            try:
                cell, row = future.result()
            except Exception as err:  # noqa: BLE001 (only a lost worker is caught; see below)
                if not _worker_lost(err):
                    raise
                lost.append(err)
                continue
            finish(cell, row)
        if lost:
            saved = sum(1 for c in todo if read_cell(out_dir, key_for(c)) is not None)
            raise BenchWorkerLost(
                f"a bench worker died ({type(lost[0]).__name__}: {str(lost[0])[:160] or 'killed'}; out of "
                f"memory or killed?) with {len(todo) - saved} of {len(todo)} cells unfinished; the {saved} "
                f"finished cells are saved in {out_dir / 'cells'}: run the same command again to resume "
                "(with --jobs 1 the rest run in this process)")


def run_bench(spec: BenchSpec, out: str | os.PathLike[str], *, jobs: int = 1, show_progress: bool = True,
              plots: bool = True, on_row: Callable[[dict[str, Any]], None] | None = None,
              executor: str | None = None) -> BenchResult:
    """Run every cell of ``spec`` not already finished in ``out``; write results.csv, summary.md and plots.

    ``executor``: None/"local" (``jobs`` local processes; in this process when jobs is 1) or
    "dask://HOST:PORT" (cetopt.bench.executor); finished cells are written here, atomically, either way.
    """
    from tqdm import tqdm

    out_dir = Path(out)
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    cells = spec.cells()
    todo = [c for c in cells if read_cell(out_dir, key_for(c)) is None]
    bar = tqdm(total=len(todo), desc="cetopt bench", unit="cell", disable=not show_progress or not todo, mininterval=1)

    def finish(cell: Cell, row: dict[str, Any]) -> None:
        write_cell(out_dir, key_for(cell), row)
        bar.update(1)
        if on_row is not None:
            on_row(row)

    try:
        if jobs <= 1 and executor in (None, "", "local"):
            for cell in todo:
                finish(cell, run_cell(cell))
        elif todo:
            _run_on_executor(todo, out_dir, executor, jobs, finish)
    finally:
        bar.close()
    rows = sorted((r for c in cells if (r := read_cell(out_dir, key_for(c))) is not None),
                  key=lambda r: (r["problem"], r["budget_avg_bits"], r["kind"], r["solver"]))
    files = [write_csv(out_dir, rows)]
    from cetopt.bench.summary import write_summary

    files.append(write_summary(out_dir, rows))
    if plots:
        from cetopt.bench.plots import write_plots

        files.extend(write_plots(out_dir, rows))
    return BenchResult(out=out_dir, rows=rows, ran=len(todo), reused=len(cells) - len(todo), files=files)

"""`cetopt solve --time-limit T` budgets the whole process (start-up, reading the problem, building the
model, solving, writing the result), not only the backend: the process ends within 1 s of T, and a limit
spent before the backend could start is answered with the greedy incumbent (limit "time")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cetopt.problem.io import save_problem
from cetopt.problem.synthetic import synthetic_problem
from cetopt.solvers.api import solve

ROOT = Path(__file__).resolve().parents[2]


def test_a_limit_spent_before_the_backend_starts_returns_the_incumbent_at_once() -> None:
    problem = synthetic_problem(2000, n_choices=6, seed=0)
    start = time.perf_counter()
    result = solve(problem, "ortools", time_limit=2.0, started=start - 1.95)  # 1.95 s already gone
    assert time.perf_counter() - start < 1.0
    assert result.limit == "time" and result.status.value == "feasible" and "spent before" in result.message
    assert result.options["time_limit"] == 2.0  # the user's limit is what the result records


def test_the_limit_counts_from_started() -> None:
    problem = synthetic_problem(50, n_choices=6, seed=0)
    assert solve(problem, "dp", time_limit=5.0, started=time.perf_counter()).status.value == "optimal"


@pytest.mark.parametrize("backend", ["waterfilling", "cvxpy", "ortools"])
def test_the_whole_process_ends_within_a_second_of_the_limit(tmp_path_factory: pytest.TempPathFactory,
                                                             backend: str) -> None:
    pytest.importorskip("cvxpy")
    pytest.importorskip("ortools")
    folder = tmp_path_factory.mktemp("limit")
    path = folder / "p.json"
    save_problem(synthetic_problem(10_000, n_choices=8, seed=0), path)  # reading it takes a good part of T
    limit = 3.0  # the setting; reading 10,000 layers takes 1-2 s of it on a loaded 2-core machine
    walls = []
    for _ in range(2):  # the better of two runs: a wall-clock bound on a shared machine sees others' bursts
        if os.getloadavg()[0] > 2 * (os.cpu_count() or 1):
            pytest.skip(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: a wall-clock bound "
                        "means nothing here")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cetopt", "solve", str(path), "--solver", backend,
                               "--time-limit", str(limit), "--format", "json"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        walls.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stderr[-2000:]
        if walls[-1] <= limit + 1.0:
            break
    assert min(walls) <= limit + 1.0, f"{backend}: {walls} s for --time-limit {limit}"

"""Time limits: every registered backend returns a feasible plan within the limit plus the documented
overhead (cetopt.solvers.deadline), model building included."""

from __future__ import annotations

import time

import pytest

from cetopt.problem.synthetic import synthetic_problem
from cetopt.solvers.api import solve
from cetopt.solvers.deadline import RESERVE_FRACTION, RESERVE_SECONDS
from cetopt.solvers.registry import available_solvers

LIMIT = 1.0
# the engines' own stopping latency and the scoring after them, on a loaded 2-core CI machine
SLACK_SECONDS = 3.0


@pytest.fixture(scope="module")
def big():  # type: ignore[no-untyped-def]
    return synthetic_problem(4000, n_choices=8, seed=1, avg_bits=3.5)


@pytest.mark.parametrize("name", [s.name for s in available_solvers() if s.installed and s.name != "bruteforce"])
def test_every_backend_honours_the_time_limit(name: str, big) -> None:  # type: ignore[no-untyped-def]
    solve(synthetic_problem(4), name)  # imports stay out of the timing
    start = time.perf_counter()
    result = solve(big, name, time_limit=LIMIT)
    elapsed = time.perf_counter() - start
    assert result.success, (name, result.status, result.message)
    assert elapsed <= LIMIT * (1 + RESERVE_FRACTION) + RESERVE_SECONDS + SLACK_SECONDS, (name, elapsed)
    if result.limit == "time":
        assert result.status.value == "feasible"

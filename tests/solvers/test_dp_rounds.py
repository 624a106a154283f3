"""dp's rounds (slack grown by admitted options) and what a stopped run reports: checked against brute force."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.problem.model import AllocationProblem
from cetopt.solvers.api import solve
from cetopt.solvers.dp import _slack_schedule
from cetopt.solvers.result import Status
from tests.solvers.test_granularity import stepped_problems


@settings(max_examples=60, deadline=None)
@given(stepped_problems(), st.integers(1, 6))
def test_a_stopped_dp_reports_a_bound_no_allocation_beats(problem: AllocationProblem, max_states: int) -> None:
    exact = solve(problem, "bruteforce")
    result = solve(problem, "dp", max_states=max_states)
    if exact.status is not Status.OPTIMAL:
        assert result.status is not Status.OPTIMAL
        return
    assert result.status in (Status.OPTIMAL, Status.FEASIBLE)
    assert result.bound is not None and result.objective is not None and exact.objective is not None
    assert result.bound <= exact.objective + 1e-9 * abs(exact.objective) + 1e-300
    assert result.objective >= exact.objective - 1e-9 * abs(exact.objective) - 1e-300
    if result.status is Status.OPTIMAL:
        assert math.isclose(result.objective, exact.objective, rel_tol=1e-9, abs_tol=1e-300)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(40, 120), st.integers(2, 40), st.sampled_from([2.5, 4.0, 6.0]))
def test_rounds_that_found_nothing_raise_the_bound_of_a_stopped_run(seed: int, layers: int, max_states: int,
                                                                    avg_bits: float) -> None:
    from cetopt.problem.synthetic import synthetic_problem

    problem = synthetic_problem(layers, n_choices=6, seed=seed, avg_bits=avg_bits)
    exact = solve(problem, "dp")  # exact (dp against brute force: test_conformance, test_granularity)
    stopped = solve(problem, "dp", max_states=max_states)
    assert exact.status is Status.OPTIMAL and exact.objective is not None
    assert stopped.status in (Status.OPTIMAL, Status.FEASIBLE), stopped.message
    assert stopped.bound is not None and stopped.bound <= exact.objective * (1 + 1e-9)
    assert stopped.objective is not None and stopped.objective >= exact.objective * (1 - 1e-9)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=400), st.floats(0.0, 2.0))
def test_slack_schedule_grows_by_admitted_options_and_ends_at_the_gap(values: list[float], total: float) -> None:
    reduced = np.array(values)[:, None]
    schedule = _slack_schedule(reduced, total)
    assert schedule[-1] == total and np.all(np.diff(schedule) > 0)
    positive = np.sort(reduced[reduced > 0])
    for k, slack in enumerate(schedule[:-1]):  # each step admits 32, 45, 64, ... of the positive reduced costs
        assert np.count_nonzero(positive <= slack) >= min(int(32 * 2 ** (k / 2)), positive.size)


@settings(max_examples=60, deadline=None)
@given(stepped_problems(), st.sampled_from([0, 1, 2, 8]))
def test_dp_is_exact_whatever_the_beam(problem: AllocationProblem, beam: int) -> None:
    exact = solve(problem, "bruteforce")
    result = solve(problem, "dp", beam=beam)
    assert result.status is exact.status
    if exact.status is Status.OPTIMAL:
        assert result.objective is not None and exact.objective is not None
        assert math.isclose(result.objective, exact.objective, rel_tol=1e-9, abs_tol=1e-300)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(40, 160), st.sampled_from([1, 3, 16]))
def test_the_beam_changes_the_speed_not_the_answer(seed: int, layers: int, beam: int) -> None:
    from cetopt.problem.synthetic import synthetic_problem

    problem = synthetic_problem(layers, n_choices=8, seed=seed, avg_bits=3.5)
    plain, beamed = solve(problem, "dp", beam=0), solve(problem, "dp", beam=beam)
    assert plain.status is beamed.status is Status.OPTIMAL
    assert plain.objective is not None and beamed.objective is not None
    assert math.isclose(plain.objective, beamed.objective, rel_tol=1e-12, abs_tol=1e-300)


def test_rounding_the_lagrangian_bound_up_to_the_size_step_proves_nothing() -> None:
    """Minimising size, the Lagrangian bound (1015.01 here) rounds up to the step of the sizes (7: 1022, the
    optimum), but reduced costs prove only against the bound itself: a first round that admits slack s finds no
    allocation of reduced cost <= s and so proves sizes above 1015.01 + s, not 1022 + s. Found by hypothesis
    (the test above): a stopped dp reported 1028.98 as its bound, above the optimum."""
    from cetopt.problem.model import Budget, Choice, Layer, Minimize

    problem = AllocationProblem(
        name="stepped", minimize=Minimize.SIZE, budget=Budget(max_loss=12.833659025054452),
        layers=(Layer(name="l0", params=144, choices=(Choice(bits=7, loss=12.833587547508719),
                                                      Choice(bits=14, loss=0.0006280905042544423))),
                Layer(name="l1", params=1, choices=(Choice(bits=7, loss=0.000199809138276919),
                                                    Choice(bits=14, loss=1.1758643888250598e-08)))))
    exact = solve(problem, "bruteforce")
    assert exact.objective == 1022.0
    for max_states in (1, 2, 100):
        result = solve(problem, "dp", max_states=max_states)
        assert result.bound is not None and result.bound <= exact.objective

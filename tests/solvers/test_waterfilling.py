"""The continuous water-filling relaxation: CVXPY agrees with the closed form, the rounded plan is feasible
and never better than the exact optimum, and it refuses what it cannot model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt import solve
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer
from cetopt.solvers.waterfilling import fit_rate_distortion, water_level

BITS = (2, 3, 4, 6, 8)


def rate_distortion_problem(seed: int, layers: int, avg_bits: float) -> AllocationProblem:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(layers):
        c = float(rng.lognormal(0, 2))
        params = int(rng.integers(10, 5000))
        noise = rng.lognormal(0, 0.05, size=len(BITS))
        out.append(Layer(name=f"l{i}", params=params,
                         choices=tuple(Choice(bits=b, loss=c * 4.0 ** -b * e) for b, e in zip(BITS, noise))))
    return AllocationProblem(name="rd", layers=tuple(out), budget=Budget(avg_bits=avg_bits))


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 10_000), st.integers(2, 12), st.floats(2.5, 7.0))
def test_cvxpy_matches_the_closed_form_and_rounds_to_a_feasible_plan(seed: int, layers: int, avg_bits: float) -> None:
    problem = rate_distortion_problem(seed, layers, avg_bits)
    result = solve(problem, "waterfilling")
    assert result.success and result.status.value == "feasible"
    params = np.array([layer.params for layer in problem.layers], dtype=float)
    c = np.array([fit_rate_distortion(np.array(BITS, float), np.array([ch.loss for ch in layer.choices]))
                  for layer in problem.layers])
    closed = water_level(c, params, np.full(layers, 2.0), np.full(layers, 8.0), avg_bits * params.sum())
    np.testing.assert_allclose(result.extra["continuous_bits"], closed, atol=2e-3)  # bits
    assert result.objective >= solve(problem, "dp").objective - 1e-12


def test_refuses_what_it_cannot_model() -> None:
    from cetopt.errors import UnsupportedProblemError
    from cetopt.problem.model import Interaction, Minimize

    problem = rate_distortion_problem(0, 3, 4.0)
    with pytest.raises(UnsupportedProblemError, match="minimise size"):
        solve(problem.with_changes(minimize=Minimize.SIZE, budget=Budget(max_loss=1.0)), "waterfilling")
    pair = Interaction(a="l0", b="l1", loss=tuple(tuple(0.0 for _ in BITS) for _ in BITS))
    with pytest.raises(UnsupportedProblemError, match="interaction"):
        solve(problem.with_changes(interactions=(pair,)), "waterfilling")
    assert solve(problem.with_changes(budget=Budget(avg_bits=1.5)), "waterfilling").status.value == "infeasible"

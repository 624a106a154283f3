"""Outlier-heavy and extreme instances: every registered backend against brute force and dp.

Real curvature problems put a 2-bit loss of 1e2..1e9 next to 8-bit losses of 1e-11, with sizes up to
1e15 bits and budgets anywhere from tight to 1e308. The invariant checked here, for every backend the
registry lists: a result is ``optimal`` only if its objective is within the certified gap tolerance of
the true optimum, every proven bound lies at or below the true optimum, and a feasible problem is never
called infeasible.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cetopt.errors import ProblemError, UnsupportedProblemError
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer, Minimize
from cetopt.solvers.api import solve
from cetopt.solvers.registry import available_solvers
from cetopt.solvers.result import GAP_TOLERANCE, Status

BACKENDS = [s.name for s in available_solvers() if s.installed and s.name != "bruteforce"]


@st.composite
def outlier_problems(draw: st.DrawFn) -> AllocationProblem:
    """2..6 layers of 2..5 bit-widths: losses log-uniform over 1e-11..1e-3 with some outliers up to 1e9,
    an occasional 1e15-bit choice, and budgets from just feasible to 1e308."""
    n = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers = []
    for i in range(n):
        bits = sorted(rng.choice([1, 2, 3, 4, 6, 8], size=int(rng.integers(2, 6)), replace=False).tolist())
        params = int(rng.integers(1, 5000))
        losses = np.sort(10.0 ** rng.uniform(-11, -3, len(bits)))[::-1]
        if rng.random() < 0.5:  # an outlier at the narrowest width
            losses[0] = 10.0 ** rng.uniform(2, 9)
        choices = [Choice(bits=b, loss=float(v)) for b, v in zip(bits, losses)]
        if rng.random() < 0.15:
            choices[-1] = Choice(bits=bits[-1], loss=float(losses[-1]), size_bits=1e15)
        layers.append(Layer(name=f"l{i}", params=params, choices=tuple(choices)))
    total = sum(layer.params for layer in layers)
    lowest = sum(min(layer.size_bits(c) for c in layer.choices) for layer in layers)
    highest = sum(max(layer.size_bits(c) for c in layer.choices) for layer in layers)
    kind = draw(st.sampled_from(["tight", "mid", "huge", "size"]))
    if kind == "huge":
        return AllocationProblem("o", tuple(layers), Budget(size_bits=1e308))
    if kind == "size":
        losses = [sorted(c.loss for c in layer.choices) for layer in layers]
        floor = sum(v[0] for v in losses)
        cap = floor * (1 + draw(st.floats(0.0, 50.0))) + sum(v[1] for v in losses if len(v) > 1) * draw(
            st.floats(0.0, 1.0))
        return AllocationProblem("o", tuple(layers), Budget(max_loss=cap), minimize=Minimize.SIZE)
    frac = draw(st.floats(0.0, 0.15)) if kind == "tight" else draw(st.floats(0.15, 1.0))
    size = lowest + frac * (min(highest, lowest + 8 * total) - lowest)
    return AllocationProblem("o", tuple(layers), Budget(size_bits=max(size, 1.0)))


def _run(problem: AllocationProblem, name: str):  # type: ignore[no-untyped-def]
    try:
        return solve(problem, name, check_budgets=False)
    except UnsupportedProblemError:
        return None


@given(outlier_problems())
def test_no_backend_calls_a_worse_plan_optimal(problem: AllocationProblem) -> None:
    truth = solve(problem, "bruteforce", check_budgets=False)
    reference = solve(problem, "dp", check_budgets=False)
    assert reference.status is truth.status
    for name in BACKENDS:
        result = _run(problem, name)
        if result is None:
            continue
        assert result.status is not Status.ERROR, (name, result.message)
        if truth.status is Status.INFEASIBLE:
            assert not result.success, name
            continue
        assert result.status is not Status.INFEASIBLE, (name, "false infeasibility", result.message)
        optimum = truth.objective
        if result.status is Status.OPTIMAL:
            assert result.objective <= optimum + 1.01 * GAP_TOLERANCE * abs(result.objective) + 1e-300, \
                (name, result.objective, optimum, result.message)
        if result.bound is not None:
            assert result.bound <= optimum + 1e-9 * abs(optimum) + 1e-300, (name, result.bound, optimum)


@pytest.mark.parametrize("value, field", [(5e-324, "budget.max_loss"), (1e-200, "layers[0].choices[0].loss")])
def test_subnormal_numbers_are_refused_with_the_field(value: float, field: str) -> None:
    layers = (Layer("a", 10, (Choice(4, 1e-3 if field.startswith("budget") else value), Choice(8, 0.0))),)
    problem = AllocationProblem("p", layers, Budget(max_loss=value if field.startswith("budget") else 1.0),
                                minimize=Minimize.SIZE)
    with pytest.raises(ProblemError, match=field.replace("[", r"\[").replace("]", r"\]")):
        solve(problem, "dp")


def test_huge_budgets_and_sizes_are_handled_by_every_backend() -> None:
    layers = (Layer("a", 100, (Choice(2, 1e4), Choice(4, 3e-9), Choice(8, 1e-11, size_bits=1e15))),
              Layer("b", 100, (Choice(2, 5e-6), Choice(8, 2e-11))))
    for budget in (Budget(size_bits=1e308), Budget(size_bits=1400.0)):
        problem = AllocationProblem("p", layers, budget)
        truth = solve(problem, "bruteforce")
        for name in BACKENDS:
            result = _run(problem, name)
            if result is None:
                continue
            assert result.success, (name, budget, result.status, result.message)
            assert result.objective >= truth.objective * (1 - 1e-12)
            if result.status is Status.OPTIMAL:
                assert result.objective <= truth.objective * (1 + GAP_TOLERANCE), (name, result.objective)


def test_a_resolution_below_one_bit_is_refused() -> None:
    from cetopt.errors import SolverOptionError
    from cetopt.problem.synthetic import synthetic_problem

    with pytest.raises(SolverOptionError, match="resolution_bits"):
        solve(synthetic_problem(3), "ortools", resolution_bits=-4)

"""The common-step tightening dp uses (cetopt.solvers.granularity), checked against independent
computations: Python's exact integer gcd and floor/ceil, and brute force on problems whose sizes share a step
(the few-distinct-layer-sizes family that made dp take minutes)."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import reduce

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer, Minimize
from cetopt.solvers.api import solve
from cetopt.solvers.granularity import bound_up, cap_down, common_step
from cetopt.solvers.result import Status

INF = float("inf")


@given(st.lists(st.lists(st.integers(0, 2**40), min_size=1, max_size=5), min_size=1, max_size=6),
       st.integers(1, 2**12))
def test_common_step_is_the_gcd_of_the_finite_entries(rows: list[list[int]], scale: int) -> None:
    width = max(len(r) for r in rows)
    table = np.full((len(rows), width), INF)
    for i, row in enumerate(rows):
        table[i, :len(row)] = [v * scale for v in row]
    values = [v * scale for row in rows for v in row]
    expected = reduce(math.gcd, values)
    assert common_step(table) == (expected if expected > 0 else None)


def test_common_step_refuses_what_is_not_exact_integers() -> None:
    assert common_step(np.array([[4.0, 8.5]])) is None
    assert common_step(np.array([[-4.0, 8.0]])) is None
    assert common_step(np.array([[4.0, 2.0**53]])) is None
    assert common_step(np.array([[0.0, 0.0]])) is None
    assert common_step(np.array([[INF, INF]])) is None


@given(st.integers(0, 2**50), st.integers(1, 2**20), st.floats(0.0, 0.999))
def test_cap_down_and_bound_up_match_exact_rounding(whole: int, step: int, frac: float) -> None:
    value = float(whole) + frac
    exact = Fraction(value)
    assert cap_down(value, step) == step * math.floor(exact / step)
    up = bound_up(value, step)
    assert up >= value * (1 - 1e-9) - 1e-300  # never below the bound less its noise
    assert up <= step * math.ceil(exact / step)  # never above the next multiple: still a valid bound
    assert cap_down(value, None) == value and bound_up(value, None) == value
    assert cap_down(INF, step) == INF and bound_up(INF, step) == INF


@st.composite
def stepped_problems(draw: st.DrawFn) -> AllocationProblem:
    """2..7 layers whose sizes are a step times one of a few small multiples, losses spread over many
    decades (a wide log-normal spread of sensitivities), bits up to 16, budgets anywhere in range."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    step = int(draw(st.sampled_from([1, 3, 64, 4096])))
    sizes = rng.choice([1, 16, 144], size=3) * step
    bits = np.sort(rng.choice(np.arange(1, 17), size=int(rng.integers(2, 5)), replace=False))
    layers = []
    for i in range(draw(st.integers(2, 7))):
        params = int(rng.choice(sizes))
        sensitivity = math.exp(rng.normal(0, 4))
        loss = sensitivity * params * 4.0 ** (-bits.astype(float)) * rng.uniform(0.8, 1.2, size=len(bits))
        layers.append(Layer(name=f"l{i}", params=params,
                            choices=tuple(Choice(bits=int(b), loss=float(v)) for b, v in zip(bits, loss))))
    total = sum(layer.params for layer in layers)
    if draw(st.booleans()):
        low, high = sum(layer.params * int(bits[0]) for layer in layers), total * int(bits[-1])
        return AllocationProblem("stepped", tuple(layers),
                                 Budget(size_bits=float(low + draw(st.floats(0.0, 1.0)) * (high - low))))
    floor = sum(min(c.loss for c in layer.choices) for layer in layers)
    top = sum(max(c.loss for c in layer.choices) for layer in layers)
    budget = Budget(max_loss=floor + draw(st.floats(0.0, 1.0)) * (top - floor))
    return AllocationProblem("stepped", tuple(layers), budget, minimize=Minimize.SIZE)


@settings(max_examples=80, deadline=None)
@given(stepped_problems())
def test_dp_matches_brute_force_when_sizes_share_a_step(problem: AllocationProblem) -> None:
    exact = solve(problem, "bruteforce")
    result = solve(problem, "dp")
    assert result.status is exact.status
    if exact.status is Status.OPTIMAL:
        assert result.objective is not None and exact.objective is not None
        assert math.isclose(result.objective, exact.objective, rel_tol=1e-9, abs_tol=1e-300)
        assert result.bound is not None and result.bound <= exact.objective * (1 + 1e-9) + 1e-300

"""Hand-computed instances (cvxpy's StandardTestLPs idea): every backend against numbers worked out on paper."""

from __future__ import annotations

import pytest

from cetopt import AllocationProblem, Budget, Choice, Interaction, Layer, Status, solve

EXACT = ["dp", "highs", "ortools", "ortools-mip", "bruteforce"]


def knapsack_trap() -> AllocationProblem:
    """Greedy takes B and C (best loss per bit saved) and gets stuck at loss 6; the optimum drops A alone.

    All at 8 bits: 220 params x 8 = 1760 bits; the budget is 1300, so 460 bits must go.
    A (100 params) to 2 bits saves 600 bits for 5.1 loss; B, C (60 params) save 360 bits for 3 each.
    Optimum: A at 2 bits, loss 5.1, size 1160. LP bound: B whole + 100/360 of C = 3 + 3 x 100/360.
    """
    def layer(name: str, params: int, loss: float) -> Layer:
        return Layer(name, params, (Choice(2, loss), Choice(8, 0.0)))

    return AllocationProblem("trap", (layer("A", 100, 5.1), layer("B", 60, 3.0), layer("C", 60, 3.0)),
                             Budget(size_bits=1300))


@pytest.mark.parametrize("name", EXACT)
def test_exact_backends_escape_the_greedy_trap(name: str) -> None:
    result = solve(knapsack_trap(), name)
    assert result.status is Status.OPTIMAL
    assert result.bits == {"A": 2, "B": 8, "C": 8}
    assert result.objective == pytest.approx(5.1)
    assert result.size_bits == 1160


def test_greedy_is_trapped_but_brackets_the_optimum_with_its_lp_bound() -> None:
    result = solve(knapsack_trap(), "greedy")
    assert result.status is Status.FEASIBLE
    assert result.objective == pytest.approx(6.0)
    assert result.bound == pytest.approx(3.0 + 3.0 * 100 / 360)
    assert result.gap == pytest.approx((6.0 - (3.0 + 300 / 360)) / 6.0)


def test_cvxpy_relaxation_value_is_the_lp_bound() -> None:
    result = solve(knapsack_trap(), "cvxpy")
    assert result.success
    assert result.extra["relaxation_value"] == pytest.approx(3.0 + 3.0 * 100 / 360, rel=1e-6)
    assert result.bound <= 5.1


def test_minimize_size_under_a_loss_bound() -> None:
    """Lossless form: smallest size with total loss <= 3.5: only one of B or C may drop (A costs 5.1)."""
    problem = knapsack_trap().with_changes(minimize="size", budget=Budget(max_loss=3.5))
    for name in ["dp", "highs", "ortools", "ortools-mip", "bruteforce"]:
        result = solve(problem, name)
        assert result.status is Status.OPTIMAL, name
        assert result.objective == 1760 - 360, name
        assert result.loss == pytest.approx(3.0)


def test_interaction_terms_change_the_optimum() -> None:
    """A large penalty when B and C both drop to 2 bits: the optimum is still A alone; a bonus for it
    makes B+C best (loss 6 - 2 = 4 < 5.1)."""
    base = knapsack_trap()
    bonus = Interaction("B", "C", ((-2.0, 0.0), (0.0, 0.0)))
    problem = base.with_changes(interactions=(bonus,))
    for name in ["highs", "ortools", "ortools-mip", "bruteforce"]:
        result = solve(problem, name)
        assert result.status is Status.OPTIMAL, name
        assert result.bits == {"A": 8, "B": 2, "C": 2}, name
        assert result.objective == pytest.approx(4.0), name
    relaxed = solve(problem, "cvxpy")
    assert relaxed.bound <= 4.0 + 1e-9


def test_ties_force_a_shared_bit_width() -> None:
    """Tying B and C means they drop together (720 bits for 6) or not at all: A alone still wins."""
    problem = knapsack_trap().with_changes(ties=(("B", "C"),), budget=Budget(size_bits=1000))
    # 1000 bits: must save 760: A (600) alone is not enough; A + (B,C) saves 1320 (loss 11.1); B+C saves 720 no.
    for name in EXACT + ["greedy"]:
        result = solve(problem, name)
        assert result.bits == {"A": 2, "B": 2, "C": 2}, name
        assert result.objective == pytest.approx(11.1)

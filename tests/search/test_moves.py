"""Level-switch moves keep every constraint: ties, per-layer bit limits, size and BOPs budgets, loss bounds
(random problems of every constraint kind, each move re-checked by the problem model)."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cetopt.problem.compiled import compile_problem
from cetopt.problem.evaluate import evaluate
from cetopt.problem.model import AllocationProblem, Minimize
from cetopt.search.base import PlanMeasurement
from cetopt.search.evaluator import Evaluator, option_of
from cetopt.search.moves import Levels, level_switch, switch_neighbours
from cetopt.solvers.api import solve
from strategies import problems


def _unmeasured(problem: AllocationProblem) -> Evaluator:
    return Evaluator(compile_problem(problem), PlanMeasurement(lambda choices, subset: 0.0, 1), forwards=0)


@settings(max_examples=60)
@given(problem=problems(max_layers=6, minimize=Minimize.LOSS), seed=st.integers(0, 1000))
def test_every_move_is_a_feasible_plan(problem: AllocationProblem, seed: int) -> None:
    answer = solve(problem, "bruteforce")
    assume(answer.success)
    evaluator = _unmeasured(problem)
    start = option_of(evaluator, dict(answer.choices))
    assert start is not None and evaluator.feasible(start)
    levels = Levels(evaluator)
    rng = np.random.default_rng(seed)
    for steps in (1, 2, 3):
        child = level_switch(levels, start, rng, steps)
        if child is not None:
            assert not evaluate(problem, evaluator.choices(child)).violations
            assert not np.array_equal(child, start)
    for delta, child in switch_neighbours(levels, start):
        assert not evaluate(problem, evaluator.choices(child)).violations
        assert delta == evaluator.predicted(child) - evaluator.predicted(start)


def test_levels_order_each_group_by_size() -> None:
    from cetopt.problem.synthetic import synthetic_problem

    evaluator = _unmeasured(synthetic_problem(5, n_choices=4, seed=1))
    levels = Levels(evaluator)
    for g, group in enumerate(evaluator.compiled.groups):
        sizes = [group.size[o] for o in levels.order[g]]
        assert sizes == sorted(sizes)
        bottom = int(levels.order[g][0])
        assert levels.down(g, bottom) is None and levels.up(g, int(levels.order[g][-1])) is None

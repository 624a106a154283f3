"""The exact MIP backends start from dp's plan where dp applies: fewer options survive reduced-cost
fixing, and a wrong dp plan is found out by the engine, never certified."""

from __future__ import annotations

import numpy as np
import pytest

from cetopt import solve
from cetopt.errors import SolverOptionError
from cetopt.problem.compiled import compile_problem
from cetopt.problem.synthetic import synthetic_problem
from cetopt.rerank import k_best
from cetopt.solvers.dp import DPSolver
from cetopt.solvers.result import Outcome, Status

MIP_BACKENDS = ("highs", "ortools", "ortools-mip")


@pytest.mark.parametrize("backend", MIP_BACKENDS)
def test_dp_and_greedy_warm_starts_reach_the_same_optimum(backend: str) -> None:
    problem = synthetic_problem(300, n_choices=8, seed=3, avg_bits=3.5, bits_pool=tuple(range(1, 9)))
    truth = solve(problem, "dp")
    by_dp = solve(problem, backend, warm_start="dp")
    by_greedy = solve(problem, backend, warm_start="greedy")
    assert by_dp.status is Status.OPTIMAL and by_greedy.status is Status.OPTIMAL
    assert by_dp.extra["incumbent_source"] == "dp"
    assert by_greedy.extra["incumbent_source"] == "greedy"
    for result in (by_dp, by_greedy):
        assert result.objective == pytest.approx(truth.objective, rel=1e-6)
    assert by_dp.extra["options_kept"] <= by_greedy.extra["options_kept"]


@pytest.mark.parametrize("backend", MIP_BACKENDS)
def test_an_unknown_warm_start_is_refused_by_name(backend: str) -> None:
    with pytest.raises(SolverOptionError, match="warm_start"):
        solve(synthetic_problem(3), backend, warm_start="oracle")


@pytest.mark.parametrize("backend", MIP_BACKENDS)
def test_a_suboptimal_dp_plan_is_improved_not_certified(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    problem = synthetic_problem(9, n_choices=4, seed=5, avg_bits=3.0, bits_pool=(2, 3, 4, 8))
    ranked = k_best(problem, 4)  # the optimum, then the next best plans
    wrong = ranked[3]
    assert wrong.objective > ranked[0].objective  # really suboptimal
    assert wrong.objective < solve(problem, "greedy").objective  # and better than greedy, so it is the incumbent
    compiled = compile_problem(problem)
    option = np.array([list(g.options[:, 0]).index(wrong.choices[layer.name])
                       for g, layer in zip(compiled.groups, problem.layers)])

    def wrong_dp(self, compiled, options, *, time_limit, seed):  # noqa: ANN001, ANN202
        return Outcome(Status.OPTIMAL, choice_index=option, bound=wrong.objective)

    monkeypatch.setattr(DPSolver, "run", wrong_dp)
    result = solve(problem, backend, warm_start="dp")
    assert result.extra["incumbent_source"] == "dp"
    assert result.status is Status.OPTIMAL
    assert result.objective == pytest.approx(ranked[0].objective, rel=1e-9)

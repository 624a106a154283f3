"""The measured search on deliberately non-additive toy problems: the measurement is the problem's additive costs
plus pairwise interactions the surrogate does not see (quantisation errors of neighbouring layers compound), so
the exact surrogate optimum is wrong (checked by brute force). Every strategy must improve on it, return only
feasible plans and stay within its forward budget."""

from __future__ import annotations

import functools
import itertools
from typing import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.problem.evaluate import evaluate
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer
from cetopt.search import PlanMeasurement, SearchBudget, Seeding, run_search, strategy_names
from cetopt.solvers.api import solve

STRATEGIES = ("evopress", "local", "refit")


class Toy:
    """measure = additive surrogate + hidden pairwise term gamma * sum_adjacent e_a e_b (e: a choice's error
    energy), per calibration batch plus a small batch-dependent noise; validation = the exact value."""

    def __init__(self, problem: AllocationProblem, gamma: float, noise: float, n_batches: int, seed: int) -> None:
        self.problem, self.gamma, self.noise, self.n_batches = problem, gamma, noise, n_batches
        rng = np.random.default_rng(seed)
        self.batch_noise = rng.normal(size=(n_batches, len(problem.layers), max(len(l.choices) for l in problem.layers)))
        self.calls: list[tuple[int, ...]] = []

    def true(self, choices: Mapping[str, int]) -> float:
        names = self.problem.layer_names
        additive = evaluate(self.problem, choices).loss
        hidden = sum(self.problem.layer(a).choices[choices[a]].loss * self.problem.layer(b).choices[choices[b]].loss
                     for a, b in zip(names, names[1:]))
        return additive + self.gamma * hidden

    def measure(self, choices: Mapping[str, int], subset: Sequence[int]) -> float:
        self.calls.append(tuple(subset))
        base = self.true(choices)
        jitter = [sum(self.batch_noise[b, i, choices[n]] for i, n in enumerate(self.problem.layer_names))
                  for b in subset]
        return base + self.noise * float(np.mean(jitter))

    def validate(self, choices: Mapping[str, int]) -> float:
        return self.true(choices)

    @functools.cache
    def brute_force(self) -> tuple[float, dict[str, int]]:
        best: tuple[float, dict[str, int]] = (float("inf"), {})
        names = self.problem.layer_names
        for combo in itertools.product(*(range(len(l.choices)) for l in self.problem.layers)):
            choices = dict(zip(names, combo))
            if evaluate(self.problem, choices).violations:
                continue
            value = self.true(choices)
            if value < best[0]:
                best = (value, choices)
        return best


def toy_problem(n_layers: int, seed: int, avg_bits: float) -> AllocationProblem:
    """Layers of random sizes with bit-widths 2, 3, 4, 6, 8 and costs sensitivity x params x 4^-b."""
    rng = np.random.default_rng(seed)
    params = rng.integers(100, 2000, n_layers)
    sensitivity = np.exp(rng.normal(0.0, 1.0, n_layers)) / params.mean()
    layers = tuple(Layer(name=f"l{i}", params=int(p), choices=tuple(
        Choice(bits=b, loss=float(s * p * 4.0 ** (2 - b))) for b in (2, 3, 4, 6, 8)))
        for i, (p, s) in enumerate(zip(params, sensitivity)))
    return AllocationProblem(name=f"toy{seed}", layers=layers, budget=Budget(avg_bits=avg_bits))


@pytest.fixture(scope="module")
def wrong_toy() -> Toy:
    toy = Toy(toy_problem(7, seed=3, avg_bits=3.5), gamma=4.0, noise=0.02, n_batches=8, seed=0)
    return toy


def test_the_toy_surrogate_optimum_is_wrong(wrong_toy: Toy) -> None:
    optimum = solve(wrong_toy.problem, "dp")
    truth, _ = wrong_toy.brute_force()
    assert wrong_toy.true(optimum.choices) > truth * 1.05  # the exact surrogate optimum is > 5% off the true best


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_improves_on_the_surrogate_optimum(wrong_toy: Toy, strategy: str) -> None:
    optimum = solve(wrong_toy.problem, "dp")
    before = wrong_toy.true(optimum.choices)
    truth, _ = wrong_toy.brute_force()
    result = run_search(wrong_toy.problem,
                        PlanMeasurement(wrong_toy.measure, wrong_toy.n_batches, wrong_toy.validate, 2),
                        strategy=strategy, budget=SearchBudget(forwards=600), seeding=Seeding(backends=False), seed=1)
    after = wrong_toy.true(result.choices)
    assert after < before - 0.5 * (before - truth)  # at least half of the surrogate's gap closed
    assert not evaluate(wrong_toy.problem, result.choices).violations
    assert result.forwards <= 600 and result.validation_dloss == pytest.approx(after)
    assert result.surrogate_measured == pytest.approx(before)  # the optimum's measured value is reported beside it
    assert result.surrogate_optimum == pytest.approx(optimum.objective)
    assert result.predicted_loss == pytest.approx(evaluate(wrong_toy.problem, result.choices).loss)


@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), n_layers=st.integers(2, 6), avg_bits=st.floats(2.2, 7.5),
       gamma=st.floats(0.0, 8.0), forwards=st.integers(12, 300), strategy=st.sampled_from(STRATEGIES))
def test_search_is_feasible_within_budget_and_never_worse_than_the_optimum(
        seed: int, n_layers: int, avg_bits: float, gamma: float, forwards: int, strategy: str) -> None:
    toy = Toy(toy_problem(n_layers, seed, avg_bits), gamma=gamma, noise=0.05, n_batches=4, seed=seed)
    result = run_search(toy.problem, PlanMeasurement(toy.measure, toy.n_batches, toy.validate, 3), strategy=strategy,
                        budget=SearchBudget(forwards=forwards), seeding=Seeding(backends=False), seed=seed)
    assert not evaluate(toy.problem, result.choices).violations
    assert result.forwards <= forwards
    assert sum(len(c) for c in toy.calls) <= forwards
    optimum = solve(toy.problem, "dp")
    assert toy.true(result.choices) <= toy.true(optimum.choices) + 1e-12  # validation is exact here


def test_the_forward_count_is_every_batch_measured(wrong_toy: Toy) -> None:
    toy = Toy(wrong_toy.problem, gamma=4.0, noise=0.02, n_batches=8, seed=0)
    validations = []

    def validate(choices: Mapping[str, int]) -> float:
        validations.append(dict(choices))
        return toy.true(choices)

    result = run_search(toy.problem, PlanMeasurement(toy.measure, toy.n_batches, validate, 5), strategy="evopress",
                        budget=SearchBudget(forwards=150), seeding=Seeding(backends=False))
    assert result.forwards == sum(len(c) for c in toy.calls) + 5 * len(validations) <= 150


def test_a_budget_too_small_for_one_plan_is_refused_by_name(wrong_toy: Toy) -> None:
    with pytest.raises(ProblemError) as err:
        run_search(wrong_toy.problem, PlanMeasurement(wrong_toy.measure, 8, wrong_toy.validate, 2),
                   budget=SearchBudget(forwards=9))
    assert err.value.field == "search_forwards" and "10" in str(err.value)


def test_unknown_strategy_and_options_are_named(wrong_toy: Toy) -> None:
    with pytest.raises(ProblemError, match="choose from"):
        run_search(wrong_toy.problem, PlanMeasurement(wrong_toy.measure, 8), strategy="annealing")
    with pytest.raises(ProblemError) as err:
        run_search(wrong_toy.problem, PlanMeasurement(wrong_toy.measure, 8), options={"offsprung": 3},
                   seeding=Seeding(backends=False))
    assert err.value.field == "search_options" and "offspring" in str(err.value)


def test_every_backend_plan_seeds_the_search(wrong_toy: Toy) -> None:
    result = run_search(wrong_toy.problem,
                        PlanMeasurement(wrong_toy.measure, wrong_toy.n_batches, wrong_toy.validate, 2),
                        strategy="local", budget=SearchBudget(forwards=200),
                        seeding=Seeding(extra={"uniform3": {n: 1 for n in wrong_toy.problem.layer_names},
                                               "uniform4": {n: 2 for n in wrong_toy.problem.layer_names}}))
    fate = result.provenance["seeds"]
    assert {"dp", "greedy", "cvxpy", "waterfilling"} <= set(fate) and fate["uniform3"] == "seed"
    assert fate["uniform4"].startswith("left out")  # 4 bits everywhere breaks the 3.5-bit budget
    assert set(strategy_names()) >= set(STRATEGIES)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_time_limit_stops_the_search_phase(wrong_toy: Toy, strategy: str) -> None:
    import time

    def slow(choices: Mapping[str, int], subset: Sequence[int]) -> float:
        time.sleep(0.002)
        return wrong_toy.measure(choices, subset)

    result = run_search(wrong_toy.problem, PlanMeasurement(slow, wrong_toy.n_batches, wrong_toy.validate, 2),
                        strategy=strategy, budget=SearchBudget(forwards=10**6, seconds=0.3),
                        seeding=Seeding(backends=False))
    assert result.provenance["stopped"] == "seconds"
    assert result.provenance["search_seconds"] < 0.3 + 2.0  # stops at the first measurement past the limit
    assert not evaluate(wrong_toy.problem, result.choices).violations

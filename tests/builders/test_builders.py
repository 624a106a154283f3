"""Problem builders on a tiny float64 model whose full Hessian is known exactly: every cost model,
the error-subspace and lossless constraints, cross-layer terms and major-axis candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cetopt import solve
from cetopt.builders.second_order import build
from cetopt.curvature import CurvatureSettings, extract_curvature
from cetopt.errors import ProblemError
from cetopt.modelspec import ModelSpec
from cetopt.problem.evaluate import evaluate
from cetopt.problem.model import Budget, Minimize
from cetopt.recipe import Recipe
from tests.curvature.test_curvature import ce_loss, exact_hessian, tiny_data, tiny_model

BITS = (2, 3, 4, 8)
# k = 10 with 20-dimensional blocks: Lanczos fills both layers, so the eigenpair model is exact
EXACT = CurvatureSettings(k=10, lanczos_iterations=40, dtype="float64", max_probes=4000, min_probes=4000, rtol=0.0)


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    model, data = tiny_model(), tiny_data()
    hessian, sizes = exact_hessian(model, data)
    curvature = extract_curvature(model, ce_loss, data, settings=EXACT, cache_dir=False, show_progress=False)
    return model, data, hessian, sizes, curvature


def built(setup, method: str, **kwargs):  # type: ignore[no-untyped-def]
    model, data, _, _, curvature = setup
    budget = kwargs.pop("budget", Budget(avg_bits=3.0))
    spec = ModelSpec(name="tiny", model=model, calibration=data, loss_fn=ce_loss)
    return build(spec, Recipe(cost_model=method, bits=BITS, **kwargs), settings=EXACT,
                 curvature=curvature).with_budget(budget)


def plan_error(b, bits: dict[str, int], model) -> np.ndarray:  # type: ignore[no-untyped-def]
    weights = b.compressed_weights(bits)
    return np.concatenate([(weights[n] - dict(model.named_modules())[n].weight).detach().numpy().ravel()
                           for n in ("0", "2")])


def gradient(model, data) -> np.ndarray:  # type: ignore[no-untyped-def]
    loss = sum(ce_loss(model, b) for b in data) / len(data)
    grads = torch.autograd.grad(loss, [model[0].weight, model[2].weight])
    return np.concatenate([g.detach().numpy().ravel() for g in grads])


def fisher_by_hand(model, data) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Mean over single samples of the squared per-sample gradient (a plain loop, no vmap)."""
    total, count = 0.0, 0
    for x, y in data:
        for i in range(len(y)):
            loss = ce_loss(model, (x[i:i + 1], y[i:i + 1]))
            grads = torch.autograd.grad(loss, [model[0].weight, model[2].weight])
            total = total + np.concatenate([g.detach().numpy().ravel() for g in grads]) ** 2
            count += 1
    return total / count


def test_every_cost_model_against_the_exact_hessian(setup) -> None:  # type: ignore[no-untyped-def]
    model, data, hessian, sizes, _ = setup
    g = gradient(model, data)
    fisher = fisher_by_hand(model, data)
    problems = {m: built(setup, m) for m in ("cet", "cet-eigen", "cet-nograd", "hawq-v3", "cet-trace", "fisher")}
    edges = np.cumsum([0] + sizes)
    for li, name in enumerate(("0", "2")):
        h = hessian[edges[li]:edges[li + 1], edges[li]:edges[li + 1]]
        gl = g[edges[li]:edges[li + 1]]
        for ci, bits in enumerate(BITS):
            d = plan_error(problems["cet"], {"0": bits, "2": bits}, model)[edges[li]:edges[li + 1]]
            exact = gl @ d + 0.5 * d @ h @ d
            loss = {m: p.problem.layer(name).choices[ci].loss for m, p in problems.items()}
            assert loss["cet"] == pytest.approx(exact, rel=1e-8, abs=1e-12)
            assert loss["cet-eigen"] == pytest.approx(exact, rel=1e-6, abs=1e-10)  # full spectrum computed
            assert loss["cet-nograd"] == pytest.approx(0.5 * d @ h @ d, rel=1e-8, abs=1e-12)
            trace_n = problems["hawq-v3"].curvature.layer(name).mean_eigenvalue
            assert loss["hawq-v3"] == pytest.approx(trace_n * (d @ d), rel=1e-12)
            assert loss["cet-trace"] == pytest.approx(gl @ d + 0.5 * loss["hawq-v3"], rel=1e-9, abs=1e-14)
            assert abs(trace_n * h.shape[0] - np.trace(h)) < 0.05 * abs(np.trace(h))  # Hutchinson, 4000 probes
            assert loss["fisher"] == pytest.approx(0.5 * fisher[edges[li]:edges[li + 1]] @ d ** 2, rel=1e-8)


def test_cross_layer_terms_make_the_plan_objective_the_full_second_order_change(setup) -> None:  # type: ignore[no-untyped-def]
    model, data, hessian, _, _ = setup
    b = built(setup, "cet", interactions=True)
    assert len(b.problem.interactions) == 1
    g = gradient(model, data)
    for bits in ({"0": 2, "2": 8}, {"0": 3, "2": 2}, {"0": 8, "2": 4}):
        d = plan_error(b, bits, model)
        choices = {n: BITS.index(v) for n, v in bits.items()}
        assert evaluate(b.problem, choices).loss == pytest.approx(g @ d + 0.5 * d @ hessian @ d, rel=1e-8)
    result = solve(b.problem, "ortools")
    assert result.objective == pytest.approx(solve(b.problem, "bruteforce").objective, rel=1e-9)


def test_error_subspace_removes_candidates_outside_it(setup) -> None:  # type: ignore[no-untyped-def]
    full = built(setup, "cet").problem
    eps = float(np.median([c.loss for layer in full.layers for c in layer.choices]))
    cut = built(setup, "cet", layer_eps=eps).problem
    for layer, whole in zip(cut.layers, full.layers):
        inside = [c for c in whole.choices if c.loss <= eps] or [min(whole.choices, key=lambda c: c.loss)]
        assert [c.bits for c in layer.choices] == [c.bits for c in inside]
    assert "removed_candidates" in cut.metadata


def test_llc_keeps_only_lossless_candidates_and_minimises_size(setup) -> None:  # type: ignore[no-untyped-def]
    b = built(setup, "llc", budget=None)
    assert b.problem.minimize is Minimize.SIZE and b.problem.budget.max_loss == 0.0
    ref = built(setup, "cet").problem
    for layer in b.problem.layers:
        all_bits = [c.bits for c in ref.layer(layer.name).choices]
        for c in layer.choices:
            exact = ref.layer(layer.name).choices[all_bits.index(c.bits)]
            assert c.loss == pytest.approx(exact.loss)
            if len(layer.choices) > 1 or c.bits != max(BITS):
                assert c.loss <= 0  # inside the directional lossless radius the change is <= 0
    result = solve(b.problem, "dp")
    assert result.success and result.objective == pytest.approx(solve(b.problem, "bruteforce").objective)


@pytest.mark.parametrize("rounding, method", [("major-axis", "cet-nograd"), ("major-axis-gradient", "cet")])
def test_major_axis_candidates_lower_their_model_and_apply_as_scored(setup, rounding: str, method: str) -> None:  # type: ignore[no-untyped-def]
    model, data, hessian, _, _ = setup
    nearest, major = built(setup, method), built(setup, method, rounding=rounding)
    g = gradient(model, data) if method == "cet" else np.zeros(35)
    for bits in (2, 3, 4):
        plan = {"0": bits, "2": bits}
        d = plan_error(major, plan, model)
        block = {n: BITS.index(bits) for n in plan}
        assert evaluate(major.problem, block).loss <= evaluate(nearest.problem, block).loss + 1e-12
        applied = major.apply(model, plan)
        got = np.concatenate([applied[i].weight.detach().numpy().ravel() for i in (0, 2)])
        want = np.concatenate([model[i].weight.detach().numpy().ravel() for i in (0, 2)]) + d
        np.testing.assert_allclose(got, want)
        assert evaluate(major.problem, block).loss == pytest.approx(
            g @ d + 0.5 * sum(d[s] @ hessian[s, s] @ d[s] for s in (slice(0, 20), slice(20, 35))), rel=1e-7)


def test_a_loss_budget_alone_minimises_the_size(setup) -> None:  # type: ignore[no-untyped-def]
    ref = built(setup, "cet").problem
    eps = 0.5 * sum(max(c.loss for c in layer.choices) for layer in ref.layers)
    problem = built(setup, "cet", budget=Budget(max_loss=eps)).problem
    assert problem.minimize is Minimize.SIZE
    result = solve(problem, "dp")
    assert result.loss <= eps + 1e-12 and result.objective == pytest.approx(solve(problem, "bruteforce").objective)


def test_bad_options_are_named(setup) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProblemError, match="method"):
        built(setup, "nope")
    with pytest.raises(ProblemError, match="rounding"):
        built(setup, "cet", rounding="up")
    with pytest.raises(ProblemError, match="llc_radius"):
        built(setup, "llc", llc_radius="x")


@pytest.mark.parametrize("method, changes", [("cet", {"interactions": True, "rounding": "mse", "layer_eps": 1e-3}),
                                             ("llc", {"llc_radius": "lambda-max", "bits": (3, 8)})])
def test_a_problem_is_rebuilt_exactly_from_the_recipe_it_records(setup, method: str, changes: dict) -> None:  # type: ignore[no-untyped-def]
    from cetopt.problem.io import problem_to_dict

    model, data, _, _, curvature = setup
    spec = ModelSpec(name="tiny", model=model, calibration=data, loss_fn=ce_loss)
    recipe = Recipe(cost_model=method, **{"bits": BITS, **changes})
    priced = build(spec, recipe, settings=EXACT, curvature=curvature)
    assert priced.recipe == recipe and priced.metadata["recipe"] == recipe.to_dict()
    again = build(spec, Recipe.from_metadata(priced.metadata), settings=EXACT, curvature=curvature)
    budget = None if priced.lossless else Budget(avg_bits=4.0)
    first, second = priced.with_budget(budget).problem, again.with_budget(budget).problem
    assert problem_to_dict(first) == problem_to_dict(second)
    if changes.get("interactions"):
        assert first.interactions  # the recipe's terms came back with it


def test_a_problem_has_no_budget_until_one_is_attached(setup) -> None:  # type: ignore[no-untyped-def]
    model, data, _, _, curvature = setup
    spec = ModelSpec(name="tiny", model=model, calibration=data, loss_fn=ce_loss)
    priced = build(spec, Recipe(cost_model="cet", bits=BITS), settings=EXACT, curvature=curvature)
    with pytest.raises(ProblemError, match="budget"):
        priced.with_budget(None)
    for budget in (Budget(avg_bits=3.0), Budget(avg_bits=5.0)):
        problem = priced.with_budget(budget).problem
        assert problem.budget == budget and problem.minimize is Minimize.LOSS
        assert problem.activation_bits == priced.recipe.activation_bits

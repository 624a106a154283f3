"""The end-to-end pipeline on the smallest zoo model: extract, build, solve, apply, measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cetopt import Status, solve
from cetopt.measure import Measurer
from cetopt.modelspec import load_model_spec
from cetopt.problem.io import dumps_problem
from cetopt.quant.apply import apply_plan
from cetopt.quant.plan import Plan, problem_quantizer
from cetopt.workflow import build_for
from cetopt.zoo.specs import ce_loss
from cetopt.problem.model import Budget
from cetopt.quant.quantizers import quantization_error


@pytest.fixture(scope="module")
def task():  # type: ignore[no-untyped-def]
    return load_model_spec("digits-mlp")


def extract_problem(task, **options):  # type: ignore[no-untyped-def]
    """CET's own problem (these tests check its exact second-order costs, not the default cost model)."""
    return build_for(task, **{"method": "cet", **options}).problem


def measure(task, bits, problem):  # type: ignore[no-untyped-def]
    applied = apply_plan(task.model, Plan(bits=bits, quantizer=problem_quantizer(problem)))
    m = Measurer(task).measure(applied.weights)
    return {**m.metrics, "measured_dloss": m.calibration_dloss, "packed_ratio": applied.ratio}


def test_cet_losses_are_the_exact_second_order_change(task) -> None:  # type: ignore[no-untyped-def]
    problem = extract_problem(task, bits=(3, 8), budget=Budget(avg_bits=5))
    layer = problem.layers[0]
    weight = dict(task.model.named_modules())[layer.name].weight
    d = quantization_error(weight, 3, problem_quantizer(problem))  # on the problem's grid (MSE-clipped by default)
    params = [weight]
    loss = sum(ce_loss(task.model, b) for b in task.calibration) / len(task.calibration)
    (g,) = torch.autograd.grad(loss, params, create_graph=True)
    (hd,) = torch.autograd.grad(g, params, grad_outputs=d)
    want = float((g * d).sum() + 0.5 * (d * hd).sum())
    assert layer.choices[0].loss == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_extraction_is_reproducible_byte_for_byte(task) -> None:  # type: ignore[no-untyped-def]
    a = dumps_problem(extract_problem(task, bits=(2, 4, 8)))
    b = dumps_problem(extract_problem(task, bits=(2, 4, 8)))
    assert a == b


def test_solved_plan_beats_uniform_2bit_and_measures(task) -> None:  # type: ignore[no-untyped-def]
    problem = extract_problem(task, bits=(2, 3, 4, 6, 8), budget=Budget(avg_bits=3.0))
    result = solve(problem, "dp")
    assert result.status is Status.OPTIMAL and result.avg_bits <= 3.0 + 1e-9
    planned = measure(task, dict(result.bits), problem)
    uniform2 = measure(task, {layer.name: 2 for layer in problem.layers}, problem)
    assert planned["accuracy"] > uniform2["accuracy"]
    assert 8.0 < planned["packed_ratio"] < 32 / 3  # scales and FP32 biases cost real bits
    assert np.isfinite(planned["measured_dloss"])


def test_second_order_prediction_is_accurate_on_a_smooth_model() -> None:
    """Where the loss is twice differentiable (tanh MLP, float64), the built problem's cost g.d + 1/2 d'Hd of each
    layer's quantisation error equals the measured loss change up to the third-order remainder: within 0.2% at 4
    bits and 0.02% at 6 and 8 bits (measured: 0.09%, 0.011%, 0.004% at worst)."""
    from cetopt.builders.second_order import build
    from cetopt.curvature import CurvatureSettings
    from cetopt.modelspec import ModelSpec
    from cetopt.pipeline import per_layer_check
    from cetopt.recipe import Recipe
    from tests.curvature.test_curvature import ce_loss as tiny_loss, tiny_data, tiny_model

    spec = ModelSpec(name="tiny", model=tiny_model(), calibration=tiny_data(), loss_fn=tiny_loss)
    tolerance = {4: 2e-3, 6: 2e-4, 8: 2e-4}
    problem = build(spec, Recipe(cost_model="cet", bits=tuple(tolerance)), settings=CurvatureSettings(dtype="float64"),
                    cache_dir=False).with_budget(Budget(avg_bits=8)).problem
    for b, tol in tolerance.items():
        # each layer alone (the whole plan adds cross-layer terms: tests/builders checks them with interactions)
        for row in per_layer_check(spec, problem, {layer.name: b for layer in problem.layers})[:-1]:
            assert abs(row["predicted"] - row["measured"]) <= tol * abs(row["measured"]), (b, row)


def test_second_order_prediction_on_the_relu_zoo_model(task) -> None:  # type: ignore[no-untyped-def]
    """On the ReLU digits MLP the expansion is only piecewise valid (autograd's Hessian does not see the kinks that
    a finite error crosses; docs/results check 1): at 6 and 8 bits every layer's predicted change has the sign of
    the measured one (some layers' loss falls when quantised, as LLC predicts) and the whole plan is predicted
    within 50%; at 2 bits the expansion underestimates, which the report shows rather than hides."""
    from cetopt.pipeline import per_layer_check

    problem = extract_problem(task, bits=(2, 6, 8), method="cet")
    for bits in (6, 8):
        rows = per_layer_check(task, problem, {layer.name: bits for layer in problem.layers})
        for row in rows:
            assert np.sign(row["predicted"]) == np.sign(row["measured"]) or abs(row["measured"]) < 1e-6, (bits, row)
        whole = rows[-1]
        assert abs(whole["predicted"] - whole["measured"]) <= 0.5 * abs(whole["measured"]), (bits, whole)
    coarse = per_layer_check(task, problem, {layer.name: 2 for layer in problem.layers})[-1]
    assert coarse["measured"] > coarse["predicted"] > 0

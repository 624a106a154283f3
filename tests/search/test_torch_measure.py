"""The search's torch measurement against the plain one: the pieces' mean loss change is the calibration loss
change that cetopt.measure computes, and the search on a tiny real model returns a feasible plan within budget."""

from __future__ import annotations

import numpy as np
import pytest

from cetopt.measure import Measurer, split_batch
from cetopt.modelspec import ModelSpec
from cetopt.problem.evaluate import evaluate
from cetopt.problem.model import Budget
from cetopt.search.base import SearchBudget, SearchRequest, Seeding
from cetopt.search.torch_measure import ModelMeasure, search_plan


def _tiny():  # type: ignore[no-untyped-def]
    from cetopt.builders.second_order import build
    from cetopt.recipe import Recipe
    from tests.curvature.test_curvature import ce_loss, tiny_data, tiny_model

    model = tiny_model()
    spec = ModelSpec(name="tiny", model=model, calibration=tiny_data(), loss_fn=ce_loss,
                     validation=tiny_data(seed=7))
    built = build(spec, Recipe(cost_model="cet-nograd", bits=(2, 3, 4, 8)),
                  cache_dir=False).with_budget(Budget(avg_bits=3.5))
    return spec, built


def test_split_batch_keeps_every_example_once() -> None:
    from tests.curvature.test_curvature import tiny_data

    x, y = tiny_data()[0]
    pieces = split_batch((x, y), 5)
    assert len(pieces) == 5 and sum(len(p[1]) for p in pieces) == 16
    assert bool((np.concatenate([p[0].numpy() for p in pieces]) == x.numpy()).all())


def test_the_pieces_mean_is_the_calibration_loss_change() -> None:
    spec, built = _tiny()
    measure = ModelMeasure(spec, built, chunks=8)
    assert measure.n_batches == 8 and measure.validation_forwards == 8  # 2 batches of 4 pieces' size
    rng = np.random.default_rng(0)
    choices = {layer.name: int(rng.integers(len(layer.choices))) for layer in built.problem.layers}
    weights = built.weights_for_choices(choices)
    plain = Measurer(spec)
    assert measure(choices, range(8)) == pytest.approx(plain.calibration_dloss(weights), rel=1e-9, abs=1e-12)
    assert measure.validate(choices) == pytest.approx(plain.validation_dloss(weights), rel=1e-9, abs=1e-12)
    assert measure.base_forwards == 8


@pytest.mark.parametrize("strategy", ["evopress", "local", "refit"])
def test_search_plan_on_a_tiny_model(strategy: str) -> None:
    spec, built = _tiny()
    result = search_plan(spec, built, SearchRequest(strategy, budget=SearchBudget(forwards=80)), chunks=8,
                         seeding=Seeding(backends=False))
    assert not evaluate(built.problem, result.choices).violations and result.forwards <= 80
    assert result.selected_on == "validation"
    assert result.validation_dloss <= result.surrogate_measured + 1e-12  # the optimum is a finalist
    assert result.provenance["calibration_pieces"] == 8

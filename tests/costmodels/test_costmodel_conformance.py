"""Every registered cost model, enrolled from the registry (a new model is checked without editing this
file): it declares known signals, reads only what it declares, returns one finite loss per candidate, and
builds a problem on a real (tiny) model that dp solves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cetopt.costmodels import SIGNALS, CostModel, LayerSignals, cost_model_names, get_cost_model, register
from cetopt.costmodels.registry import _REGISTRY
from cetopt.errors import ProblemError

K = 5


def full_signals() -> LayerSignals:
    rng = np.random.default_rng(0)
    fields = {f.name for f in dataclasses.fields(LayerSignals)} - {"name", "params"}
    values = {name: (float(rng.uniform(0.1, 1.0)) if name == "trace_per_weight" else rng.uniform(0.01, 1.0, K))
              for name in fields}
    return LayerSignals(name="layer", params=100, **values)


def only(needs: frozenset[str]) -> LayerSignals:
    """Signals with every field the model does not declare left out (None)."""
    full = full_signals()
    keep = set(needs) | {"energy", "linear"}
    return dataclasses.replace(full, **{f.name: None for f in dataclasses.fields(LayerSignals)
                                        if f.name not in keep | {"name", "params"}})


@pytest.mark.parametrize("name", cost_model_names())
def test_registered_cost_model_conforms(name: str) -> None:
    model = get_cost_model(name)
    assert isinstance(model, CostModel) and model.name == name and model.description
    assert model.needs <= SIGNALS, f"{name} declares unknown signals {set(model.needs) - SIGNALS}"
    estimate = model.estimate(only(model.needs))  # raises if it reads an undeclared signal
    loss = np.asarray(estimate.loss)
    assert loss.shape == (K,) and np.isfinite(loss).all()
    if estimate.stderr is not None:
        assert np.asarray(estimate.stderr).shape == (K,) and (np.asarray(estimate.stderr) >= 0).all()
    again = model.estimate(only(model.needs))
    assert np.array_equal(np.asarray(again.loss), loss)


def test_undeclared_signal_reads_fail_loudly() -> None:
    class Sloppy(CostModel):
        name = "sloppy"
        description = "reads the quadratic form without declaring it"
        needs = frozenset({"linear"})

        def estimate(self, layer: LayerSignals):  # type: ignore[no-untyped-def]
            from cetopt.costmodels import CostEstimate

            return CostEstimate(loss=layer.require("quadratic"))

    with pytest.raises(ValueError, match="quadratic"):
        Sloppy().estimate(only(Sloppy.needs))


def test_unknown_names_and_signals_are_refused() -> None:
    with pytest.raises(ProblemError, match="unknown cost model"):
        get_cost_model("nosuch")
    register("bad-needs", "tests.costmodels.test_costmodel_conformance:_BadNeeds")
    try:
        with pytest.raises(ProblemError, match="unknown signals"):
            get_cost_model("bad-needs")
    finally:
        _REGISTRY.pop("bad-needs", None)


class _BadNeeds(CostModel):
    name = "bad-needs"
    description = "declares a signal nobody computes"
    needs = frozenset({"telepathy"})

    def estimate(self, layer: LayerSignals):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")


@pytest.mark.parametrize("name", cost_model_names())
def test_registered_cost_model_builds_a_problem_on_a_tiny_model(name: str) -> None:
    from cetopt import solve
    from cetopt.builders.second_order import build
    from cetopt.curvature import CurvatureSettings
    from cetopt.modelspec import ModelSpec
    from cetopt.problem.model import Budget
    from cetopt.recipe import Recipe
    from tests.curvature.test_curvature import ce_loss, tiny_data, tiny_model

    settings = CurvatureSettings(k=4, lanczos_iterations=16, dtype="float64", max_probes=64, min_probes=16)
    spec = ModelSpec(name="tiny", model=tiny_model(), calibration=tiny_data(), loss_fn=ce_loss,
                     validation=tiny_data(seed=9))  # held-out batches for cet-holdout
    built = build(spec, Recipe(cost_model=name, bits=(2, 4, 8)), settings=settings, cache_dir=False,
                  ).with_budget(Budget(avg_bits=8.0))  # lossless models may drop the small widths
    losses = [c.loss for layer in built.problem.layers for c in layer.choices]
    assert losses and np.isfinite(losses).all()
    assert built.problem.metadata["cost_model"]["name"] == name
    assert solve(built.problem, "dp").success

"""The fidelity objectives (cetopt.losses) and the inputs-only ModelSpec: values against independent formulas,
the batch forms, the automatic choice, and the errors a user meets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from cetopt import ModelSpec
from cetopt.errors import ProblemError
from cetopt.losses import (INPUTS, REFERENCE, choose_kind, cosine_to_reference, feed, is_referenced,
                           kl_to_reference, output_mse, referenced, weights_digest)


def _mlp(out: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, out))


def test_values_match_independent_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    out, ref = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    model = nn.Identity()
    batch = referenced(out, ref)
    p, q = torch.softmax(ref, 1).numpy(), torch.softmax(out, 1).numpy()
    assert float(kl_to_reference(model, batch)) == pytest.approx(np.mean(np.sum(p * np.log(p / q), axis=1)), rel=1e-12)
    assert float(output_mse(model, batch)) == pytest.approx(float(np.mean((out - ref).numpy() ** 2)), rel=1e-12)
    o, r = out.numpy(), ref.numpy()
    cos = np.sum(o * r, 1) / np.linalg.norm(o, axis=1) / np.linalg.norm(r, axis=1)
    assert float(cosine_to_reference(model, batch)) == pytest.approx(np.mean(1 - cos), rel=1e-12)
    for objective in (kl_to_reference, output_mse, cosine_to_reference):  # the minimum: the reference itself
        assert abs(float(objective(model, referenced(ref, ref)))) < 1e-12


def test_feed_forms() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a - b

    a, b = torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert torch.equal(feed(nn.Identity(), a), a)
    assert torch.equal(feed(Two(), (a, b)), a - b)
    assert torch.equal(feed(Two(), [a, b]), a - b)
    assert torch.equal(feed(Two(), {"b": b, "a": a}), a - b)
    with pytest.raises(ProblemError, match="tensor, a tuple/list"):
        feed(Two(), 3)


def test_choose_kind() -> None:
    assert choose_kind(torch.randn(4, 10))[0] == "kl"
    assert choose_kind(torch.randn(4))[0] == "mse" and choose_kind(torch.randn(4, 1))[0] == "mse"
    unit = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    assert choose_kind(unit)[0] == "cosine"


def test_inputs_only_spec_records_references_once() -> None:
    model = _mlp()
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    spec = ModelSpec(name="m", model=model, calibration=[x[:32], x[32:64]], validation=[x[64:80]], test=[x[80:]])
    assert spec.fidelity and spec.loss_fn.kind == "kl" and "classifier logits" in spec.metadata["objective"]
    assert all(is_referenced(b) for b in (*spec.calibration, *spec.validation, *spec.test))
    with torch.no_grad():
        assert torch.equal(spec.calibration[1][REFERENCE], model(x[32:64]))
    assert spec.loss_fn.reference_digest == weights_digest(model)
    assert spec.metrics() == {"agreement": 1.0, "kl": 0.0, "cosine": pytest.approx(1.0), "mse": 0.0}
    assert np.array_equal(spec.test_outcomes(model), np.ones(16))
    # dataclasses.replace keeps the recorded batches and references new ones
    again = dataclasses.replace(spec, calibration=[*spec.calibration, x[:8]])
    assert again.calibration[0] is spec.calibration[0] and torch.equal(again.calibration[2][INPUTS], x[:8])
    # another model keeps the references and their digest: it is not taken for the objective's minimum
    other = dataclasses.replace(spec, model=_mlp(seed=1))
    assert other.loss_fn.reference_digest == spec.loss_fn.reference_digest != weights_digest(other.model)
    with pytest.raises(ProblemError, match="other weights"):
        dataclasses.replace(spec, model=_mlp(seed=1), calibration=[x[:8]])


def test_named_objective_and_mse_metrics() -> None:
    model = _mlp(out=4)
    x = torch.randn(40, 6)
    spec = ModelSpec(name="m", model=model, calibration=[x[:20]], validation=[x[20:]], loss_fn=output_mse)
    assert spec.loss_fn.kind == "mse" and spec.metadata["evaluation"] == "fidelity to FP32 on the validation batches"
    assert list(spec.metrics()) == ["cosine", "mse"]


def test_labels_without_loss_fn_are_a_clear_error() -> None:
    x, y = torch.randn(8, 6), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ProblemError, match="drop any labels, or give ModelSpec.loss_fn") as err:
        ModelSpec(name="m", model=_mlp(), calibration=[(x, y)])
    assert err.value.field == "ModelSpec.calibration"


def test_unbound_objective_on_plain_batch_is_a_clear_error() -> None:
    with pytest.raises(ProblemError, match="cetopt records the references"):
        kl_to_reference(_mlp(), torch.randn(3, 6))


from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.integers(0, 10_000), st.floats(0.1, 30.0))
def test_objectives_are_nonnegative_and_zero_only_at_the_reference(rows: int, width: int, seed: int,
                                                                   scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    ref = scale * torch.randn(rows, width, generator=g, dtype=torch.float64)
    out = ref + torch.randn(rows, width, generator=g, dtype=torch.float64)
    for objective in (kl_to_reference, output_mse, cosine_to_reference):
        assert float(objective(nn.Identity(), referenced(out, ref))) >= -1e-12
    assert float(output_mse(nn.Identity(), referenced(out, ref))) > 0

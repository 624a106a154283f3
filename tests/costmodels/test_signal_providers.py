"""The signal providers against plain autograd loops on a tiny float64 model: the standard error of g.d
(per-sample gradients), g.d on the held-out split, and the measured single-layer loss change; and the builder
carrying each cost model's standard error into the problem."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cetopt.builders.second_order import build
from cetopt.builders.signal_holdout import linear_holdout
from cetopt.builders.signal_measured import measured_changes
from cetopt.builders.signal_stderr import linear_stderr
from cetopt.curvature.operator import CurvatureOperator
from cetopt.errors import ProblemError
from cetopt.modelspec import ModelSpec
from cetopt.problem.model import Budget
from cetopt.recipe import Recipe
from tests.curvature.test_curvature import ce_loss, tiny_data, tiny_model

LAYERS = ("0", "2")


def _errors(model: torch.nn.Module, seed: int = 1, k: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    return {n: 0.05 * torch.randn((k, *mods[n].weight.shape), generator=g, dtype=torch.float64) for n in LAYERS}


@pytest.mark.parametrize("use_vmap", [True, False])
def test_linear_stderr_matches_a_per_sample_loop(use_vmap: bool) -> None:
    model, data = tiny_model(), tiny_data(batches=3)
    errors = _errors(model)
    got = linear_stderr(CurvatureOperator(model, ce_loss, data, device="cpu"), errors, chunk=5, use_vmap=use_vmap)
    mods = dict(model.named_modules())
    rows = {n: [] for n in LAYERS}
    for x, y in data:
        for i in range(len(y)):
            grads = torch.autograd.grad(ce_loss(model, (x[i:i + 1], y[i:i + 1])), [mods[n].weight for n in LAYERS])
            for n, gr in zip(LAYERS, grads):
                rows[n].append((errors[n].reshape(len(errors[n]), -1) @ gr.reshape(-1)).numpy())
    for n in LAYERS:
        samples = np.array(rows[n])
        expected = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
        np.testing.assert_allclose(got[n], expected, rtol=1e-9)


def test_linear_stderr_needs_two_samples() -> None:
    model = tiny_model()
    one = [(torch.randn(1, 4, dtype=torch.float64), torch.tensor([0]))]
    with pytest.raises(ProblemError, match="2 calibration samples"):
        linear_stderr(CurvatureOperator(model, ce_loss, one, device="cpu"), _errors(model))


def test_linear_holdout_is_the_validation_gradient() -> None:
    model, calibration, validation = tiny_model(), tiny_data(seed=0), tiny_data(seed=5)
    errors = _errors(model)
    got = linear_holdout(CurvatureOperator(model, ce_loss, calibration, device="cpu"), validation, errors)
    mods = dict(model.named_modules())
    loss = sum(ce_loss(model, b) for b in validation) / len(validation)
    grads = torch.autograd.grad(loss, [mods[n].weight for n in LAYERS])
    for n, gr in zip(LAYERS, grads):
        np.testing.assert_allclose(got[n], (errors[n].reshape(3, -1) @ gr.reshape(-1)).numpy(), rtol=1e-10)
    with pytest.raises(ProblemError) as info:
        linear_holdout(CurvatureOperator(model, ce_loss, calibration, device="cpu"), (), errors)
    assert info.value.field == "validation"


@pytest.mark.parametrize("prefix", [True, False])
def test_measured_changes_swap_one_layer_and_restore_it(prefix: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from cetopt.curvature.prefix import PrefixRunner

    model, data = tiny_model(), tiny_data()
    before = copy.deepcopy(model.state_dict())
    mods = dict(model.named_modules())
    candidates = {n: [mods[n].weight.detach() + e for e in _errors(model)[n]] for n in LAYERS}
    suffix_runs = []
    original = PrefixRunner.loss_with
    monkeypatch.setattr(PrefixRunner, "loss_with", lambda self, *a: suffix_runs.append(a[0]) or original(self, *a))
    got = measured_changes(CurvatureOperator(model, ce_loss, data, device="cpu"), candidates, prefix=prefix)
    # the prefix path really ran from recorded activations (every candidate of every batch), or not at all
    assert len(suffix_runs) == (len(data) * sum(len(c) for c in candidates.values()) if prefix else 0)
    base = float(sum(ce_loss(model, b) for b in data) / len(data))
    for n in LAYERS:
        for k, w in enumerate(candidates[n]):
            other = copy.deepcopy(model)
            dict(other.named_modules())[n].weight.data.copy_(w)
            expected = float(sum(ce_loss(other, b) for b in data) / len(data)) - base
            assert got[n][k] == pytest.approx(expected, rel=1e-10, abs=1e-14)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("method", ["cet-shrink", "cet-holdout", "measured", "cet-trust"])
def test_builder_scores_with_the_new_models(method: str) -> None:
    model, data = tiny_model(), tiny_data()
    spec = ModelSpec(name="tiny", model=model, calibration=data, loss_fn=ce_loss, validation=tiny_data(seed=9))
    built = build(spec, Recipe(cost_model=method, bits=(2, 4, 8)), cache_dir=False).with_budget(Budget(avg_bits=4.0))
    for layer in built.problem.layers:
        for choice in layer.choices:
            assert np.isfinite(choice.loss)
            assert (choice.loss_stderr is not None) == (method == "cet-shrink")
    assert built.problem.metadata["cost_model"]["name"] == method


class _DataDependent(torch.nn.Module):
    """Data-dependent control flow (like Hugging Face's attention-mask checks): torch.func.vmap refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.abs() > 1e9).any()):
            x = x.clamp(-1e9, 1e9)
        return self.body(x)


def test_linear_stderr_falls_back_to_one_pass_per_sample_when_vmap_cannot_batch(caplog) -> None:  # type: ignore[no-untyped-def]
    model, data = _DataDependent(), tiny_data()
    errors = {"body.0": _errors(model.body)["0"]}
    op = CurvatureOperator(model, ce_loss, data, device="cpu", layers=["body.0"])
    auto = linear_stderr(op, errors)
    looped = linear_stderr(op, errors, use_vmap=False)
    np.testing.assert_allclose(auto["body.0"], looped["body.0"], rtol=1e-12)
    assert "vmap cannot batch this model" in caplog.text


class _Twice(torch.nn.Module):
    """One Linear called twice (prefix caching cannot isolate it) before a Linear it can."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 4).double()
        self.head = torch.nn.Linear(4, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


def test_measured_changes_mix_recorded_and_full_forwards_per_layer() -> None:
    torch.manual_seed(0)
    model = _Twice()
    data = [(torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))) for _ in range(2)]
    mods = dict(model.named_modules())
    candidates = {n: [mods[n].weight.detach() + 0.1 * torch.randn_like(mods[n].weight) for _ in range(2)]
                  for n in ("shared", "head")}
    op = CurvatureOperator(model, ce_loss, data, layers=["shared", "head"], device="cpu")
    got = measured_changes(op, candidates)
    want = measured_changes(op, candidates, prefix=False)
    for n in candidates:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-15)
        assert np.all(np.abs(want[n]) > 0)

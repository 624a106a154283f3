"""Prefix caching (cetopt.curvature.prefix): quadratic forms from each layer's cached input on equal the
full-graph ones and the exact Hessian in float64 (1e-10), on a residual CNN with BatchNorm; models that
cannot be traced, or losses that call the model twice, fall back to the full graph and say so in a debug log."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cetopt.curvature import CurvatureOperator, quadratic_forms
from cetopt.curvature.prefix import prefix_runner


class ResidualCNN(nn.Module):
    """conv -> BN -> ReLU -> (conv + skip) -> pool -> linear: a skip connection around a quantisable layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn(self.conv1(x)))
        h = h + torch.tanh(self.conv2(h))
        return self.head(h.flatten(1))


class Branchy(ResidualCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = x * 1.0
        return super().forward(x)


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def twice(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return ce(model, batch) + 0.1 * model(batch[0]).pow(2).mean()


def setup(seed: int, cls: type = ResidualCNN) -> tuple[nn.Module, list]:
    torch.manual_seed(seed)
    model = cls().double()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (6,), generator=g))
            for _ in range(2)]
    return model, data


def errors_for(op: CurvatureOperator, seed: int, k: int = 3) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {n: [torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1 for _ in range(k)]
            for n, p in zip(op.names, op.params)}


def exact_own(model: nn.Module, data: list, loss_fn, name: str, errors: list[torch.Tensor]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """e' H_ll e from torch.autograd.functional.hessian of the mean loss in the layer's weight."""
    module = dict(model.named_modules())[name]
    w0 = module.weight.detach().clone()

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        params = {f"{name}.weight": flat.reshape(w0.shape)}
        total = sum(loss_fn(lambda x: torch.func.functional_call(model, params, (x,), strict=False), b) for b in data)
        return total / len(data)

    model.eval()
    h = torch.autograd.functional.hessian(loss_of, w0.reshape(-1)).numpy()
    return np.array([e.reshape(-1).numpy() @ h @ e.reshape(-1).numpy() for e in errors])


def test_the_suffix_runs_only_from_the_layer_on() -> None:
    model, data = setup(0)
    runner = prefix_runner(model.eval(), ce)
    assert runner is not None and runner.record(model, data[0])
    calls = {"conv1": 0, "conv2": 0, "head": 0}
    hooks = [getattr(model, n).register_forward_hook(lambda *a, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls]
    g, w = runner.first_order("conv2", model.conv2.weight)
    for h in hooks:
        h.remove()
    assert calls == {"conv1": 0, "conv2": 1, "head": 1} and g.shape == w.shape and g.requires_grad


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), at_output=st.booleans())
def test_prefix_cached_forms_equal_the_full_graph_and_the_exact_hessian(seed: int, at_output: bool) -> None:
    import cetopt.curvature.prefix as prefix

    saved = prefix.PrefixRunner.shortcut_problem
    if not at_output:  # products w.r.t. the weight, not the layer output (the path for non-affine layers)
        prefix.PrefixRunner.shortcut_problem = lambda self, layer: "forced off by the test"  # type: ignore[method-assign]
    try:
        check_prefix_forms(seed)
    finally:
        prefix.PrefixRunner.shortcut_problem = saved  # type: ignore[method-assign]


def check_prefix_forms(seed: int) -> None:
    model, data = setup(seed)
    op = CurvatureOperator(model, ce, data, device="cpu")
    assert prefix_runner(op.model, ce) is not None
    errors = errors_for(op, seed)
    logger = logging.getLogger("cetopt.curvature.prefix")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        cached = quadratic_forms(op, errors, show_progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert not [r for r in records if "prefix caching off" in r.getMessage()]  # the cached path ran
    full = quadratic_forms(op, errors, prefix_cache=False, show_progress=False)
    for name in op.names:
        np.testing.assert_allclose(cached.own[name], full.own[name], rtol=1e-10, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(cached.own[name], exact_own(model, data, ce, name, errors[name]), rtol=1e-10,
                                   atol=1e-14, err_msg=name)


@pytest.mark.parametrize(("cls", "loss_fn", "reason"), [(Branchy, ce, "cannot trace"),
                                                        (ResidualCNN, twice, "calls the model 2 times")])
def test_untraceable_models_fall_back_to_the_full_graph_and_say_so(cls: type, loss_fn, reason: str,  # type: ignore[no-untyped-def]
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    model, data = setup(1, cls)
    op = CurvatureOperator(model, loss_fn, data, device="cpu")
    errors = errors_for(op, 1)
    with caplog.at_level(logging.DEBUG, logger="cetopt.curvature.prefix"):
        cached = quadratic_forms(op, errors, show_progress=False)
    assert any("prefix caching off" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    for name in op.names:
        np.testing.assert_allclose(cached.own[name], exact_own(model, data, loss_fn, name, errors[name]),
                                   rtol=1e-10, atol=1e-14, err_msg=name)


class PiecewiseLinearCNN(ResidualCNN):
    """ReLU, ReLU6, a constant scale, max pooling and a skip: piecewise linear after every layer."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(3 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))
        h = h + nn.functional.relu6(self.conv2(h)) * 0.5
        return self.head(torch.flatten(self.pool(h), 1))


class Gated(ResidualCNN):
    """A product of two layer-dependent tensors (a gate): not piecewise linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))
        h = h * self.conv2(h)
        return self.head(h.flatten(1))


def recorded(cls: type, seed: int = 0):  # type: ignore[no-untyped-def]
    model, data = setup(seed, cls)
    runner = prefix_runner(model.eval(), ce)
    assert runner is not None and runner.record(model, data[0])
    return runner


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_forward_mode_forms_equal_the_exact_hessian_where_the_model_is_piecewise_linear(seed: int) -> None:
    model, data = setup(seed, PiecewiseLinearCNN)
    op = CurvatureOperator(model, ce, data, device="cpu")
    errors = errors_for(op, seed)
    runner = prefix_runner(op.model.eval(), ce)
    assert runner is not None and runner.record(model, data[0])
    for name in op.names:  # the forward path runs for every layer
        assert runner.nonlinear_node(name) is None
        assert runner.forward_forms(name, torch.stack(errors[name])) is not None
    forward = quadratic_forms(op, errors, show_progress=False)
    backward = quadratic_forms(op, errors, forward_mode=False, show_progress=False)
    for name in op.names:
        np.testing.assert_allclose(forward.own[name], backward.own[name], rtol=1e-10, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(forward.own[name], exact_own(model, data, ce, name, errors[name]), rtol=1e-10,
                                   atol=1e-14, err_msg=name)


def test_forward_mode_is_refused_downstream_of_a_curved_node_and_the_forms_stay_exact() -> None:
    assert "tanh" in str(recorded(ResidualCNN).nonlinear_node("conv1"))
    assert "mul" in str(recorded(Gated).nonlinear_node("conv1"))  # h * conv2(h): both factors depend on conv1
    assert recorded(Gated).nonlinear_node("conv2") is None  # the gate h is a constant for conv2
    runner = recorded(ResidualCNN)
    assert runner.forward_forms("conv1", torch.zeros(1, *runner.traced.conv1.weight.shape)) is None
    model, data = setup(5, Gated)
    op = CurvatureOperator(model, ce, data, device="cpu")
    errors = errors_for(op, 5)
    forms = quadratic_forms(op, errors, show_progress=False)
    for name in op.names:
        np.testing.assert_allclose(forms.own[name], exact_own(model, data, ce, name, errors[name]), rtol=1e-10,
                                   atol=1e-14, err_msg=name)


def test_batchnorm_in_training_mode_is_not_piecewise_linear() -> None:
    runner = recorded(PiecewiseLinearCNN)
    assert runner.nonlinear_node("conv1") is None
    runner.traced.bn.train()
    try:
        assert "bn" in str(runner.nonlinear_node("conv1"))
    finally:
        runner.traced.bn.eval()

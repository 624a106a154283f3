"""The curvature paths under a fidelity objective at its FP32 reference: the gradient is 0 and is not computed,
the forward-mode forms are the exact Hessian for a model that is not piecewise linear (the Gauss-Newton matrix,
checked against the full autograd Hessian), and output-space probes are allowed there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cetopt import ModelSpec
from cetopt.curvature.operator import CurvatureOperator
from cetopt.curvature.output_traces import exactness_problem
from cetopt.curvature.quadratic import quadratic_forms


def _spec(dtype: torch.dtype = torch.float64) -> ModelSpec:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.GELU(), nn.Linear(6, 4)).to(dtype)
    x = torch.randn(48, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return ModelSpec(name="smooth", model=model, calibration=[x[:24], x[24:]])


def _mean_loss(spec: ModelSpec, model: nn.Module) -> torch.Tensor:
    return sum(spec.loss_fn(model, b) for b in spec.calibration) / len(spec.calibration)


def test_gradient_is_zero_and_not_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(torch.float32)
    # independent check: autograd's gradient of the objective at the FP32 weights is ~0 next to its size one step away
    params = [m.weight for m in spec.model if isinstance(m, nn.Linear)]
    at_fp32 = torch.autograd.grad(_mean_loss(spec, spec.model), params)
    import copy

    moved = copy.deepcopy(spec.model)
    with torch.no_grad():
        moved[0].weight.add_(0.05 * torch.randn_like(moved[0].weight))
    away = torch.autograd.grad(_mean_loss(spec, moved), [m.weight for m in moved if isinstance(m, nn.Linear)])
    assert max(float(g.abs().max()) for g in at_fp32) < 1e-4 * max(float(g.abs().max()) for g in away)

    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration, device="cpu")
    loss, gradient = op.loss_and_gradient(show_progress=False)
    assert op.stationary and op.gradient_passes == 0 and not calls  # no backward pass ran
    assert all(float(g.abs().max()) == 0.0 for g in gradient) and abs(loss) < 1e-9
    # a user loss, or other weights, is not taken for stationary
    assert not CurvatureOperator(moved, spec.loss_fn, spec.calibration, device="cpu").stationary
    user = CurvatureOperator(spec.model, lambda m, b: spec.loss_fn(m, b), spec.calibration, device="cpu")
    user.loss_and_gradient(show_progress=False)
    assert not user.stationary and user.gradient_passes == 2


def test_forward_forms_are_the_exact_hessian_beyond_piecewise_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    from cetopt.curvature.prefix import PrefixRunner

    used = []
    real = PrefixRunner.forward_forms
    monkeypatch.setattr(PrefixRunner, "forward_forms",
                        lambda self, *a: (lambda v: used.append(v is not None) or v)(real(self, *a)))
    spec = _spec()
    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration, device="cpu", dtype=torch.float64)
    assert op.stationary
    g = torch.Generator().manual_seed(2)
    errors = {name: [1e-2 * torch.randn(p.shape, generator=g, dtype=torch.float64) for _ in range(3)]
              for name, p in zip(op.names, op.params)}
    forms = quadratic_forms(op, errors, show_progress=False)
    for j, (name, param) in enumerate(zip(op.names, op.params)):
        def loss_of(w: torch.Tensor, j: int = j) -> torch.Tensor:  # the full Hessian of layer j's block, autograd
            module = [m for m in spec.model if isinstance(m, nn.Linear)][j]
            saved = module.weight
            del module.weight
            module.weight = w
            try:
                return _mean_loss(spec, spec.model)
            finally:
                del module.weight
                module.weight = saved

        hessian = torch.autograd.functional.hessian(loss_of, param.detach().clone()).reshape(param.numel(), -1)
        exact = [float(e.reshape(-1) @ hessian @ e.reshape(-1)) for e in errors[name]]
        assert forms.own[name] == pytest.approx(exact, rel=1e-8, abs=1e-14)
        assert min(exact) > 0  # positive semi-definite: every predicted change >= 0
    assert used and all(used)  # every layer's forms came from forward mode (one jvp), none from double backward


def test_output_space_probes_allowed_at_the_reference_only() -> None:
    spec = _spec()
    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration, device="cpu")
    assert exactness_problem(op) is None
    task = CurvatureOperator(spec.model, lambda m, b: m(b["cetopt.inputs"]).logsumexp(1).mean(), spec.calibration,
                             device="cpu")
    assert exactness_problem(task) is not None  # Tanh and GELU: not exact for a loss with a nonzero gradient


def test_empirical_fisher_cost_model_is_refused_under_fidelity() -> None:
    from cetopt.errors import ProblemError
    from cetopt.workflow import build_for

    with pytest.raises(ProblemError, match="empirical Fisher") as err:
        build_for(_spec(torch.float32), method="fisher", bits=(2, 4), cache_dir=False)
    assert err.value.field == "method"

"""Output-space traces (cetopt.curvature.output_traces): on a piecewise-linear CNN they estimate the exact
Hessian traces without bias (float64, many probes, within 4 standard errors), with a smaller per-probe
variance than shared weight-space probes; models with curved nodes, and distributed runs, are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cetopt.curvature import CurvatureOperator, hutchinson_traces
from cetopt.curvature.output_traces import exactness_problem, output_space_traces, softmax_ce_scale
from tests.curvature.test_prefix import Gated, PiecewiseLinearCNN, ResidualCNN, ce, setup


def mse(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Squared error to a one-hot target: not softmax cross-entropy, so the general probe runs."""
    out = model(batch[0])
    return (out - torch.nn.functional.one_hot(batch[1], out.shape[-1]).to(out)).pow(2).sum(dim=1).mean()


def exact_traces(model: torch.nn.Module, data: list, loss_fn=ce) -> list[float]:  # type: ignore[type-arg, no-untyped-def]
    out = []
    for name in ("conv1", "conv2", "head"):
        module = dict(model.named_modules())[name]
        w0 = module.weight.detach().clone()

        def loss_of(flat: torch.Tensor, name: str = name, w0: torch.Tensor = w0) -> torch.Tensor:
            params = {f"{name}.weight": flat.reshape(w0.shape)}
            call = lambda x: torch.func.functional_call(model, params, (x,), strict=False)  # noqa: E731
            return sum(loss_fn(call, b) for b in data) / len(data)

        out.append(float(torch.autograd.functional.hessian(loss_of, w0.reshape(-1)).trace()))
    return out


@pytest.mark.parametrize("loss_fn", [ce, mse])
def test_output_space_traces_estimate_the_exact_traces_with_less_variance_than_shared_probes(loss_fn) -> None:  # type: ignore[no-untyped-def]
    model, data = setup(7, PiecewiseLinearCNN)
    model.eval()
    op = CurvatureOperator(model, loss_fn, data, device="cpu")
    assert exactness_problem(op) is None
    estimates = output_space_traces(op, max_probes=3000, min_probes=3000, seed=1, show_progress=False)
    assert estimates is not None
    exact = exact_traces(model, data, loss_fn)
    for e, t in zip(estimates, exact):
        assert e.n_probes == 3000 and abs(e.trace - t) < 4 * e.stderr, (e, t)
    shared = hutchinson_traces(op, max_probes=300, min_probes=300, seed=1, show_progress=False)
    for e, s in zip(estimates, shared):  # per-probe standard deviations: sqrt(n) x stderr
        assert e.stderr * np.sqrt(e.n_probes) < s.stderr * np.sqrt(s.n_probes)


def test_curved_models_are_refused_with_the_reason() -> None:
    for cls, node in ((ResidualCNN, "tanh"), (Gated, "mul")):
        model, data = setup(2, cls)
        op = CurvatureOperator(model.eval(), ce, data, device="cpu")
        assert node in str(exactness_problem(op))
        assert output_space_traces(op, show_progress=False) is None


@pytest.mark.parametrize(("reduction", "expected"), [("mean", 1 / 6), ("sum", 1.0), ("mse", None)])
def test_the_softmax_cross_entropy_structure_is_recognised_with_its_scale(reduction: str, expected: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (6,), generator=g)
    loss = (out - 1.0).pow(2).sum() if reduction == "mse" else \
        torch.nn.functional.cross_entropy(out, labels, reduction=reduction)
    (g_out,) = torch.autograd.grad(loss, out, create_graph=True)
    scale = softmax_ce_scale(out, g_out, g)
    assert (scale is None) if expected is None else scale == pytest.approx(expected, rel=1e-10)


def test_extraction_uses_output_space_probes_where_exact_and_says_which_ran() -> None:
    from cetopt.curvature import CurvatureSettings, extract_curvature
    from cetopt.errors import ProblemError

    settings = CurvatureSettings(k=0, max_probes=32, device="cpu")
    for cls, estimator in ((PiecewiseLinearCNN, "output"), (ResidualCNN, "shared")):
        model, data = setup(3, cls)
        result = extract_curvature(model.eval(), ce, data, settings=settings, cache_dir=False, show_progress=False)
        assert result.metadata["trace_estimator"] == estimator
    with pytest.raises(ProblemError, match="piecewise-linear.*tanh"):
        extract_curvature(model, ce, data, settings=CurvatureSettings(k=0, trace_mode="output", device="cpu"),
                          cache_dir=False, show_progress=False)

"""Trace estimators against exact Hessians (float64): deflation with the Lanczos Ritz vectors is unbiased and
lowers the probe variance; hitting the probe cap warns naming the layers; the thread default is sane."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.curvature import CurvatureOperator, hutchinson_traces, lanczos_eigenpairs
from cetopt.curvature.deflation import deflated_traces, deflation_basis
from cetopt.curvature.threads import configure_threads, default_threads
from tests.curvature.test_curvature import blocks, ce_loss, exact_hessian, tiny_data  # one exact reference


def wide_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def rademacher_variance(a: np.ndarray) -> float:
    """Exact variance of v'Av for Rademacher v and symmetric A: 2 (||A||_F^2 - sum a_ii^2)."""
    return float(2 * (np.sum(a * a) - np.sum(np.diag(a) ** 2)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deflation_is_unbiased_and_lowers_the_variance_exactly(seed: int) -> None:
    model, data = wide_model(seed), tiny_data(seed)
    hessian, sizes = exact_hessian(model, data)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    eig = lanczos_eigenpairs(op, k=3, iterations=12, seed=seed, show_progress=False)
    for block, e in zip(blocks(hessian, sizes), eig):
        q, ritz_sum = deflation_basis(e)
        np.testing.assert_allclose(q @ q.T, np.eye(len(q)), atol=1e-8)
        p = np.eye(block.shape[0]) - q.T @ q
        # the estimator's expectation: sum of Ritz values + Tr(P H P) equals Tr(H_ll)
        assert abs(ritz_sum + np.trace(p @ block @ p) - np.trace(block)) <= 1e-8 * np.abs(block).sum()
        assert rademacher_variance(p @ block @ p) < rademacher_variance(block)


def test_deflated_estimates_are_within_their_error() -> None:
    model, data = wide_model(3), tiny_data(3)
    hessian, sizes = exact_hessian(model, data)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    eig = lanczos_eigenpairs(op, k=2, iterations=8, seed=0, show_progress=False)
    estimates = deflated_traces(op, eig, max_probes=800, min_probes=200, rtol=1e-3, seed=5, show_progress=False)
    plain = hutchinson_traces(op, max_probes=800, min_probes=200, rtol=1e-3, seed=5, show_progress=False,
                              mode="restricted")
    for block, est, ref in zip(blocks(hessian, sizes), estimates, plain):
        assert abs(est.trace - np.trace(block)) <= 4 * est.stderr + 1e-10
        assert est.stderr < ref.stderr


def test_hitting_the_probe_cap_warns_naming_the_layers(caplog: pytest.LogCaptureFixture) -> None:
    model, data = wide_model(0), tiny_data(0)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    with caplog.at_level(logging.WARNING, logger="cetopt.curvature.hutchinson"):
        hutchinson_traces(op, max_probes=4, min_probes=2, rtol=1e-6, show_progress=False)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "cap of 4 probes" in text and "0" in text and "2 of 2 layers" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cetopt.curvature.hutchinson"):
        hutchinson_traces(op, max_probes=4, min_probes=2, rtol=1e6, show_progress=False)
    assert not caplog.records


def test_thread_default_is_between_one_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    before = torch.get_num_threads()
    try:
        assert 1 <= default_threads() <= max(1, len(os.sched_getaffinity(0)))
        monkeypatch.setattr(os, "getloadavg", lambda: (1e6, 0.0, 0.0))
        assert default_threads() == 1  # a saturated machine gets one thread, not zero
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert default_threads() == 1
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_extraction_with_deflated_traces_matches_the_exact_traces() -> None:
    from cetopt.curvature import CurvatureSettings, extract_curvature

    model, data = wide_model(4), tiny_data(4)
    hessian, sizes = exact_hessian(model, data)
    settings = CurvatureSettings(trace_mode="deflated", k=0, max_probes=400, min_probes=50, rtol=1e-3, device="cpu",
                                 dtype="float64")
    result = extract_curvature(model, ce_loss, data, settings=settings, cache_dir=False, show_progress=False)
    for block, layer in zip(blocks(hessian, sizes), result.layers):
        assert layer.eig is not None and len(layer.eig.top_values) == min(8, block.shape[0])
        assert abs(layer.trace - np.trace(block)) <= 4 * layer.trace_stderr + 1e-9 * np.abs(block).sum()

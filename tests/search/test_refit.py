"""The refit strategy's correction model against an independent computation: the primal ridge solved by least
squares on augmented rows, and leave-one-out by refitting without each plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.search.refit import fit_correction


def primal(p: np.ndarray, P: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """argmin ||y - s p - P delta||^2 + lam ||delta||^2 by lstsq (s unpenalised)."""
    X = np.column_stack([p, P])
    rows = np.column_stack([np.zeros(P.shape[1]), np.sqrt(lam) * np.eye(P.shape[1])])
    w = np.linalg.lstsq(np.vstack([X, rows]), np.concatenate([y, np.zeros(P.shape[1])]), rcond=None)[0]
    return float(w[0]), w[1:]


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 12), layers=st.integers(1, 5), lam=st.sampled_from([0.01, 1.0, 30.0]))
def test_the_dual_fit_and_its_leave_one_out_match_the_primal(seed: int, n: int, layers: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    choices = rng.integers(0, 3, size=(n, layers))
    P = np.zeros((n, 3 * layers))
    for i in range(n):
        P[i, 3 * np.arange(layers) + choices[i]] = 1.0
    p = rng.uniform(0.1, 2.0, n)
    y = 1.7 * p + P @ rng.normal(0, 0.3, 3 * layers) + rng.normal(0, 0.05, n)
    fitted = fit_correction(p, P, y, lambdas=(lam,))
    scale, delta = primal(p, P, y, lam)
    assert fitted.scale == pytest.approx(scale, rel=1e-6, abs=1e-8)
    np.testing.assert_allclose(fitted.delta, delta, rtol=1e-6, atol=1e-8)
    loo = []
    for i in range(n):
        keep = np.arange(n) != i
        s_i, d_i = primal(p[keep], P[keep], y[keep], lam)
        loo.append(y[i] - s_i * p[i] - P[i] @ d_i)
    assert fitted.loo_rmse == pytest.approx(float(np.sqrt(np.mean(np.square(loo)))), rel=1e-5, abs=1e-9)

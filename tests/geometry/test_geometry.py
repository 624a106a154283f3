"""Quadric classification and CET sensitivities against dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cetopt.geometry import QuadricKind, cet_sensitivity, classify, hawq_sensitivity


def random_symmetric(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n))
    return (a + a.T) / 2 + shift * np.eye(n)


def test_classification() -> None:
    assert classify(np.array([3.0, 1.0, 0.5])) is QuadricKind.ELLIPSOID
    assert classify(np.array([3.0, -0.2])) is QuadricKind.HYPERBOLIC_PARABOLOID
    assert classify(np.array([3.0, 1e-12])) is QuadricKind.DEGENERATE


@given(st.integers(2, 12), st.integers(0, 10_000))
def test_k0_without_gradient_is_half_of_hawq_exactly(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d, trace = rng.normal(size=n), float(rng.normal() * 10)
    cet = cet_sensitivity(d, trace=trace, use_gradient=False, use_eigenbasis=False)
    assert cet == 0.5 * hawq_sensitivity(d, trace)


@given(st.integers(2, 10), st.integers(0, 10_000))
def test_full_eigenbasis_is_the_exact_second_order_change(n: int, seed: int) -> None:
    h = random_symmetric(n, seed)  # indefinite in general
    rng = np.random.default_rng(seed + 1)
    d, g = rng.normal(size=n), rng.normal(size=n)
    values, vectors = np.linalg.eigh(h)
    got = cet_sensitivity(d, trace=float(np.trace(h)), gradient=g, eigenvalues=values, eigenvectors=vectors.T)
    assert got == pytest.approx(g @ d + 0.5 * d @ h @ d, rel=1e-9, abs=1e-9)


def test_partial_eigenbasis_spreads_the_rest_of_the_trace() -> None:
    h = random_symmetric(6, 0, shift=5.0)
    values, vectors = np.linalg.eigh(h)
    d = np.random.default_rng(1).normal(size=6)
    top = slice(4, 6)
    got = cet_sensitivity(d, trace=float(np.trace(h)), eigenvalues=values[top], eigenvectors=vectors[:, top].T,
                          use_gradient=False)
    coords = vectors[:, top].T @ d
    rest = (np.trace(h) - values[top].sum()) / 4
    want = 0.5 * (values[top] @ coords ** 2 + rest * (d @ d - coords @ coords))
    assert got == pytest.approx(want, rel=1e-12)

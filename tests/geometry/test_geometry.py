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


# ---------------------------------------------------------------------------- LayerQuadric
from cetopt.geometry.layer import LayerQuadric  # noqa: E402


def full_quadric(h: np.ndarray, g: np.ndarray) -> LayerQuadric:
    values, vectors = np.linalg.eigh(h)
    return LayerQuadric(name="l", gradient=g, trace=float(np.trace(h)), eigenvalues=values, eigenvectors=vectors.T)


@given(st.integers(2, 9), st.integers(0, 10_000))
def test_quadric_model_geometry_against_dense_algebra(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    h = a @ a.T + 0.5 * np.eye(n)  # positive definite: an ellipsoid
    g, d = rng.normal(size=n), rng.normal(size=n)
    q = full_quadric(h, g)
    assert q.kind is QuadricKind.ELLIPSOID
    assert q.change(d) == pytest.approx(g @ d + 0.5 * d @ h @ d, rel=1e-9)
    # the centre is the minimiser -H^-1 g, and the minimum is -g'H^-1 g / 2
    centre = q.centre_shift()
    np.testing.assert_allclose(centre, -np.linalg.solve(h, g), rtol=1e-7, atol=1e-9)
    # each semi-axis end lies on the level set dL = eps
    eps = 0.7
    for axis, u in zip(q.semi_axes(eps), q.eigenvectors):
        assert q.change(centre + axis * u) == pytest.approx(eps, rel=1e-7, abs=1e-9)
    # orthogonal decomposition; the quadratic energy splits across the two subspaces
    major, comp = q.decompose(d, k_major=n // 2)
    np.testing.assert_allclose(major + comp, d, atol=1e-12)
    assert abs(major @ comp) < 1e-9 * (d @ d)
    assert q.quadratic(major) + q.complement_energy(d, k_major=n // 2) == pytest.approx(d @ h @ d, rel=1e-9)
    assert q.in_error_subspace(centre, eps) and not q.in_error_subspace(centre + 1.01 * q.semi_axes(eps)[0] * q.major_axis, eps)


@given(st.integers(2, 9), st.integers(0, 10_000))
def test_lossless_radius_keeps_the_model_change_nonpositive(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = random_symmetric(n, seed, shift=2.0 * n)
    g = rng.normal(size=n)
    q = full_quadric(h, g)
    u = -g / np.linalg.norm(g) + 0.3 * rng.normal(size=n)
    u /= np.linalg.norm(u)
    if g @ u >= 0:
        assert q.lossless_radius(u) == 0.0
        return
    for curvature in (None, float(u @ h @ u)):
        rho = q.lossless_radius(u, curvature)
        for t in np.linspace(0, rho, 7)[1:]:
            assert q.change(t * u) <= 1e-12
    rho = q.lossless_radius(u, float(u @ h @ u))
    assert q.change(1.05 * rho * u) > 0  # the directional radius is tight


def test_indefinite_and_flat_quadrics_are_open() -> None:
    q = full_quadric(np.diag([2.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0]))
    assert q.kind is QuadricKind.HYPERBOLIC_PARABOLOID
    axes = q.semi_axes(1.0)
    assert np.isinf(axes[:2]).all() and np.isfinite(axes[2])  # ascending: -1, 0 open; 2 closed
    np.testing.assert_allclose(q.centre_shift(), [-0.5, 0.0, 0.0])  # flat directions left out

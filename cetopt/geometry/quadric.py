"""The level sets of a layer's local loss model dL(d) = g.d + 1/2 d'Hd are quadrics (CET, arXiv 2502.15802):
ellipsoids when H is positive definite, hyperbolic paraboloids (saddles) when it is indefinite, and
degenerate (parabolic-cylinder-like) when some curvature vanishes. Only the computed part of the
spectrum (Lanczos' extreme eigenpairs) is seen, so the verdict is about that part, as the name says."""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class QuadricKind(StrEnum):
    ELLIPSOID = "ellipsoid"
    HYPERBOLIC_PARABOLOID = "hyperbolic_paraboloid"
    DEGENERATE = "degenerate"


def classify(eigenvalues: np.ndarray, *, rtol: float = 1e-6) -> QuadricKind:
    """Kind of quadric given the computed eigenvalues of H_ll.

    Args:
        eigenvalues: the computed spectrum (e.g. Lanczos top-k and bottom-k), any order.
        rtol: eigenvalues within rtol x max|lambda| of zero count as zero curvature.
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.size == 0:
        raise ValueError("classify needs at least one eigenvalue")
    scale = float(np.abs(values).max())
    tol = rtol * scale
    if values.min() < -tol:
        return QuadricKind.HYPERBOLIC_PARABOLOID
    if values.min() > tol:
        return QuadricKind.ELLIPSOID
    return QuadricKind.DEGENERATE


def principal_coordinates(vectors: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Coordinates u_i . d of an error vector d (n,) along unit eigenvectors ``vectors`` (k, n)."""
    return np.asarray(vectors, dtype=np.float64) @ np.asarray(d, dtype=np.float64).ravel()

"""Per-candidate sensitivities from a layer's curvature (cet-method.md, section 1.3, step 4).

CET (reconstruction; each ingredient is a switch so numerical checks decide what works):

    s(d) = g.d + 1/2 [ sum_{i<=k} lambda_i (u_i.d)^2 + lambda_rest (|d|^2 - sum_{i<=k} (u_i.d)^2) ]

with lambda_rest = (Tr H - sum_{i<=k} lambda_i) / (n - k), the mean of the spectrum not computed.
With k = 0 and no gradient term this is 1/2 (Tr H / n) |d|^2: one half of HAWQ-V3's sensitivity
Omega = (Tr H / n) |d|^2 (the 1/2 of the Taylor expansion; a constant factor, so both rank every
allocation identically). With the whole eigenbasis (k = n) it is exactly g.d + 1/2 d'Hd.
"""

from __future__ import annotations

import numpy as np

from cetopt.geometry.quadric import principal_coordinates


def hawq_sensitivity(d: np.ndarray, trace: float) -> float:
    """HAWQ-V3's Omega = (Tr H / n) ||d||^2 for an error vector d (any shape, n = d.size)."""
    d = np.asarray(d, dtype=np.float64).ravel()
    return float(trace / d.size * (d @ d))


def cet_sensitivity(d: np.ndarray, *, trace: float, gradient: np.ndarray | None = None,
                    eigenvalues: np.ndarray | None = None, eigenvectors: np.ndarray | None = None,
                    use_gradient: bool = True, use_eigenbasis: bool = True, use_rest: bool = True) -> float:
    """CET sensitivity of error d (see module docstring).

    Args:
        d: the error Q_b(W) - W (any shape, flattened in the weight's layout).
        trace: Tr(H_ll) (e.g. Hutchinson).
        gradient: g_l, same layout as d (used when ``use_gradient``).
        eigenvalues, eigenvectors: k computed eigenpairs of H_ll, (k,) and (k, n), orthonormal rows.
        use_gradient: include g.d (the LLC first-order term that lets a change lower the loss).
        use_eigenbasis: use the k eigenpairs (False: k = 0, trace only).
        use_rest: spread the uncomputed spectrum as its mean over the complement (False: ignore it).
    """
    d = np.asarray(d, dtype=np.float64).ravel()
    n = d.size
    energy = float(d @ d)
    lam = np.zeros(0)
    coords = np.zeros(0)
    if use_eigenbasis and eigenvalues is not None and len(eigenvalues):
        if eigenvectors is None:
            raise ValueError("eigenvectors are needed with eigenvalues")
        lam = np.asarray(eigenvalues, dtype=np.float64)
        coords = principal_coordinates(eigenvectors, d)
    k = lam.size
    quad = float(lam @ coords ** 2)
    if use_rest and k < n:
        rest = (trace - float(lam.sum())) / (n - k)
        quad += rest * (energy - float(coords @ coords))
    linear = float(np.asarray(gradient, dtype=np.float64).ravel() @ d) if use_gradient and gradient is not None else 0.0
    return linear + 0.5 * quad

"""Per-layer traces with variance reduction by deflation (Hutch++-style) with the Lanczos Ritz vectors that
extraction already computes.

For layer l with orthonormal Ritz vectors Q (its top and bottom eigenpairs, theta_i their values),

    Tr(H_ll) = Tr(Q' H_ll Q) + Tr(P H_ll P),   P = I - Q Q',

and Tr(Q' H_ll Q) = sum theta_i (Ritz values are Rayleigh quotients on the Krylov space), so no product is
spent on it; the remainder is estimated by Hutchinson with layer-restricted Rademacher probes projected by
P (unbiased: E[(Pv)' H (Pv)] = Tr(P H P)). The extreme eigenvalues carry most of ||H_ll||_F, which sets the
probe variance, so deflating them lowers it. Unlike Hutch++ proper, the sketch is the Lanczos space (free
when eigenpairs are extracted anyway), not fresh products.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from cetopt.curvature.hutchinson import TraceEstimate, _estimates, rademacher_like, warn_if_capped
from cetopt.curvature.lanczos import Eigenpairs
from cetopt.curvature.operator import CurvatureOperator, check_finite
from cetopt.curvature.progress import progress
from cetopt.errors import ProblemError


def deflation_basis(eig: Eigenpairs, *, overlap: float = 0.5) -> tuple[np.ndarray, float]:
    """(Q, sum theta): the top and bottom Ritz vectors as rows (r, n), a bottom vector dropped when it
    repeats a top one (|<b, t>| > ``overlap``, small layers whose Krylov space holds both ends), and the
    sum of their Ritz values."""
    top = np.asarray(eig.top_vectors, dtype=np.float64)
    rows, values = list(top), list(np.asarray(eig.top_values, dtype=np.float64))
    for vector, value in zip(np.asarray(eig.bottom_vectors, dtype=np.float64), eig.bottom_values):
        if top.size == 0 or np.max(np.abs(top @ vector)) <= overlap:
            rows.append(vector)
            values.append(float(value))
    basis = np.stack(rows) if rows else np.zeros((0, top.shape[1] if top.ndim == 2 else 0))
    return basis, float(np.sum(values))


def deflated_traces(operator: CurvatureOperator, eig: Sequence[Eigenpairs | None], *, max_probes: int = 128,
                    min_probes: int = 16, rtol: float = 0.05, seed: int = 0,
                    show_progress: bool = True) -> list[TraceEstimate]:
    """Tr(H_ll) per layer = sum of the deflated Ritz values + Hutchinson on the projected remainder.

    Args:
        operator: the curvature operator.
        eig: each layer's Eigenpairs from :func:`cetopt.curvature.lanczos.lanczos_eigenpairs` (same order).
        max_probes, min_probes, rtol, seed: as for hutchinson_traces (stops when every layer's stderr /
            |trace| < rtol; warns naming the layers when the cap comes first).

    Returns:
        One TraceEstimate per layer; ``stderr`` is the remainder's (the deflated part is taken as exact).
    """
    if len(eig) != len(operator.params) or any(e is None for e in eig):
        raise ProblemError("deflated traces need every layer's eigenpairs (settings.k > 0)", field="eig")
    bases, exact = [], []
    for p, e in zip(operator.params, eig):
        q, total = deflation_basis(e)  # type: ignore[arg-type]
        bases.append(torch.as_tensor(q, dtype=p.dtype, device=p.device))
        exact.append(total)
    generator = torch.Generator().manual_seed(seed)
    samples: list[list[float]] = [[] for _ in operator.params]
    bar = progress(total=max_probes, desc="hutchinson (deflated)", disable=not show_progress)
    try:
        for done in range(1, max_probes + 1):
            probes = [p[0] for p in rademacher_like(operator.params, 1, generator)]
            projected = [_project(v, q) for v, q in zip(probes, bases)]
            products = operator.layer_hvp(projected)
            for j, (w, hw) in enumerate(zip(projected, products)):
                value = (w * hw).sum()
                check_finite(operator.names[j], "Hessian-vector product", value)
                samples[j].append(float(value))
            bar.update(1)
            if done >= min_probes and all(e.relative_error < rtol for e in _shifted(samples, exact)):
                break
    finally:
        bar.close()
    estimates = _shifted(samples, exact)
    warn_if_capped(operator.names, estimates, rtol=rtol, max_probes=max_probes)
    return estimates


def _project(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(I - Q'Q) v for v shaped like the weight and Q (r, n) with orthonormal rows."""
    if q.shape[0] == 0:
        return v
    flat = v.reshape(-1)
    return (flat - q.T @ (q @ flat)).reshape(v.shape)


def _shifted(samples: list[list[float]], exact: list[float]) -> list[TraceEstimate]:
    return [TraceEstimate(trace=e.trace + x, stderr=e.stderr, n_probes=e.n_probes)
            for e, x in zip(_estimates(samples), exact)]

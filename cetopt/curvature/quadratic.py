"""Exact quadratic forms of given error vectors: e_l' H_ll e_l per layer and candidate, and optionally the
cross-layer terms e_a' H_ab e_b. This is the quantity CET needs for a layer's quantisation error at
each candidate bit-width. Each product differentiates only the layers involved (a layer's gradient
w.r.t. its own weight, or w.r.t. its neighbour's for cross terms), a fraction of a full Hessian pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from cetopt.curvature.operator import CurvatureOperator, check_finite
from cetopt.errors import ProblemError


@dataclass(frozen=True)
class QuadraticForms:
    """Quadratic forms of per-layer error vectors.

    Attributes:
        own: layer name -> (K,) array of e_k' H_ll e_k for that layer's K error vectors.
        linear: layer name -> (K,) array of g_l . e_k (the first-order term), if a gradient was given.
        cross: (a, b) -> (K_a, K_b) array of e_a,i' H_ab e_b,j for the requested pairs.
    """

    own: dict[str, np.ndarray]
    linear: dict[str, np.ndarray] = field(default_factory=dict)
    cross: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def quadratic_forms(operator: CurvatureOperator, errors: dict[str, Sequence[torch.Tensor]], *,
                    pairs: Sequence[tuple[str, str]] = (), gradient: Sequence[torch.Tensor] | None = None
                    ) -> QuadraticForms:
    """e' H e for each layer's error vectors (and e_a' H_ab e_b for ``pairs``).

    Args:
        operator: the curvature operator.
        errors: layer name -> list of error tensors shaped like the weight (e.g. Q_b(W) - W per bit-width).
        pairs: layer pairs whose cross terms to compute (e.g. producer/consumer from the layer graph).
        gradient: per-layer gradients, to also return g . e.
    """
    names = operator.names
    unknown = [n for n in errors if n not in names]
    if unknown:
        raise ProblemError(f"no such quantisable layer(s) {unknown[:3]}; known: {names[:5]}...", field="errors")
    counts = {n: len(v) for n, v in errors.items()}
    index = {n: i for i, n in enumerate(names)}
    params = operator.params
    stacked: dict[str, torch.Tensor] = {}
    for name, vectors in errors.items():
        target = params[index[name]]
        for i, tensor in enumerate(vectors):
            if tuple(tensor.shape) != tuple(target.shape):
                raise ProblemError(f"error vector {i} of {name!r} has shape {tuple(tensor.shape)}, the weight "
                                   f"{tuple(target.shape)}", field="errors")
        stacked[name] = torch.stack([t.to(device=target.device, dtype=target.dtype) for t in vectors])
    own = {}
    for name, block in stacked.items():
        products = operator.cross_block_hvp(index[name], index[name], block)
        values = (block * products).reshape(block.shape[0], -1).sum(dim=1)
        check_finite(name, "quadratic form", values)
        own[name] = values.double().cpu().numpy()
    cross = {}
    for a, b in pairs:
        # d(g_b . e_b)/dW_a = H_ab e_b (as a W_a-shaped tensor); dot with e_a gives e_a' H_ab e_b
        products = operator.cross_block_hvp(index[b], index[a], stacked[b])  # (K_b, *shape_a)
        flat_a = stacked[a].reshape(counts[a], -1)
        cross[(a, b)] = (flat_a @ products.reshape(counts[b], -1).T).double().cpu().numpy()
    linear = {}
    if gradient is not None:
        for name in errors:
            g = gradient[index[name]]
            linear[name] = np.array([float((g * e.to(g)).sum()) for e in errors[name]])
    return QuadraticForms(own=own, linear=linear, cross=cross)

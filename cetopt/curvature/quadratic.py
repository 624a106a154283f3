"""Exact quadratic forms of given error vectors: e_l' H_ll e_l per layer and candidate, and optionally the
cross-layer terms e_a' H_ab e_b. This is the quantity CET needs for a layer's quantisation error at
each candidate bit-width; one batched Hessian pass per candidate index covers every layer.
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
    width = max(counts.values(), default=0)
    own = {n: np.zeros(counts[n]) for n in errors}
    cross = {(a, b): np.zeros((counts[a], counts[b])) for a, b in pairs}
    index = {n: i for i, n in enumerate(names)}
    params = operator.params
    # products[l][i] = H e_(l, i) restricted to every layer block, computed one candidate index at a time
    block_products: dict[str, list[list[torch.Tensor]]] = {n: [] for n in errors}
    for i in range(width):
        present = [n for n in errors if i < counts[n]]
        batched = [torch.zeros((len(present), *p.shape), dtype=p.dtype, device=p.device) for p in params]
        for b, name in enumerate(present):
            tensor = errors[name][i]
            target = params[index[name]]
            if tuple(tensor.shape) != tuple(target.shape):
                raise ProblemError(f"error vector {i} of {name!r} has shape {tuple(tensor.shape)}, the weight "
                                   f"{tuple(target.shape)}", field="errors")
            batched[index[name]][b] = tensor.to(device=target.device, dtype=target.dtype)
        products = operator.hvp(batched, batched=True)
        for b, name in enumerate(present):
            block_products[name].append([products[j][b] for j in range(len(params))])
    for name in errors:
        j = index[name]
        for i, e in enumerate(errors[name]):
            value = (e.to(params[j]) * block_products[name][i][j]).sum()
            check_finite(name, "quadratic form", value)
            own[name][i] = float(value)
    for a, b in pairs:
        jb = index[b]
        for i in range(counts[a]):
            hv_b = block_products[a][i][jb]
            for k, e_b in enumerate(errors[b]):
                cross[(a, b)][i, k] = float((e_b.to(hv_b) * hv_b).sum())
    linear = {}
    if gradient is not None:
        for name in errors:
            g = gradient[index[name]]
            linear[name] = np.array([float((g * e.to(g)).sum()) for e in errors[name]])
    return QuadraticForms(own=own, linear=linear, cross=cross)

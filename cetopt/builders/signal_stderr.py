"""The ``linear_stderr`` signal: the standard error of each candidate's first-order term g.d over the
calibration samples.

Per-sample gradients g_s (torch.func.vmap over single samples, as in
:func:`cetopt.curvature.signals.fisher_diagonal`) are projected onto each candidate's error d, giving the
(S, K) matrix of g_s.d; its sample standard deviation over S samples / sqrt(S) is the standard error of the
mean g.d. The whole per-sample gradient is never stored beyond one chunk of samples.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch.func import grad, vmap

from cetopt.curvature.operator import Batch, CurvatureOperator, eval_mode
from cetopt.errors import ProblemError


def linear_stderr(op: CurvatureOperator, errors: Mapping[str, torch.Tensor], *, chunk: int = 32
                  ) -> dict[str, np.ndarray]:
    """Standard error of g.d per layer and candidate.

    Args:
        op: the curvature operator (calibration batches; each batch is split along dimension 0 of every tensor).
        errors: layer name -> (K, *weight.shape) stacked candidate errors d.
        chunk: samples per vmap call (memory: chunk x the layers' weight count).

    Returns:
        layer name -> (K,) standard errors (the loss's unit), from per-sample gradients.

    Raises:
        ProblemError(field="calibration"): fewer than 2 calibration samples.
    """
    from cetopt.curvature.signals import _batch_size, _call, _slice, _unsqueeze

    names = [n for n in op.names if n in errors]
    keys = {n: f"{n}.weight" for n in names}
    all_weights = {f"{n}.weight": p.detach() for n, p in zip(op.names, op.params)}
    weights = {keys[n]: all_weights[keys[n]] for n in names}
    others = {k: v.detach() for k, v in op.model.named_parameters() if k not in weights}
    buffers = dict(op.model.named_buffers())
    flat = {n: errors[n].detach().to(device=op.device, dtype=weights[keys[n]].dtype).reshape(len(errors[n]), -1)
            for n in names}

    def sample_loss(w: dict[str, torch.Tensor], sample: Batch) -> torch.Tensor:
        return _call(op.model, {**others, **w}, buffers, op.loss_fn, _unsqueeze(sample))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0))
    sums = {n: torch.zeros(len(flat[n]), dtype=torch.float64) for n in names}
    squares = {n: torch.zeros(len(flat[n]), dtype=torch.float64) for n in names}
    count = 0
    with eval_mode(op.model):
        for batch in op.batches:
            for start in range(0, _batch_size(batch), chunk):
                part = _slice(batch, start, start + chunk)
                grads = per_sample(weights, part)
                for n in names:
                    proj = (grads[keys[n]].reshape(grads[keys[n]].shape[0], -1) @ flat[n].T).double().cpu()
                    sums[n] += proj.sum(dim=0)
                    squares[n] += (proj ** 2).sum(dim=0)
                count += _batch_size(part)
    if count < 2:
        raise ProblemError(f"the standard error of g.d needs >= 2 calibration samples, got {count}",
                           field="calibration")
    out = {}
    for n in names:
        mean = sums[n] / count
        variance = torch.clamp((squares[n] - count * mean ** 2) / (count - 1), min=0.0)
        out[n] = torch.sqrt(variance / count).numpy()
    return out

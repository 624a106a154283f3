"""The ``linear_stderr`` signal: the standard error of each candidate's first-order term g.d over the
calibration samples.

Per-sample gradients g_s (torch.func.vmap over single samples, as in
:func:`cetopt.curvature.signals.fisher_diagonal`) are projected onto each candidate's error d, giving the
(S, K) matrix of g_s.d; its sample standard deviation over S samples / sqrt(S) is the standard error of the
mean g.d. The whole per-sample gradient is never stored beyond one chunk of samples.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
from torch.func import grad, vmap

from cetopt.curvature.operator import Batch, CurvatureOperator, eval_mode
from cetopt.curvature.signals import chunk_for_memory
from cetopt.errors import ProblemError

log = logging.getLogger(__name__)
SampleFn = Callable[[dict[str, torch.Tensor], Batch], torch.Tensor]


def _per_sample_gradients(op: CurvatureOperator, params: dict[str, torch.Tensor], sample_loss: SampleFn,
                          chunk: int, use_vmap: bool) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Chunks of per-sample gradients {key: (S, *shape)} and S: torch.func.vmap, or, for models vmap cannot batch
    (data-dependent control flow such as Hugging Face attention masks), one autograd pass per sample: the same
    numbers, slower (logged as a warning)."""
    from cetopt.curvature.signals import _batch_size, _slice

    batched = vmap(grad(sample_loss), in_dims=(None, 0))
    weights = {k: p.detach() for k, p in params.items()}
    for batch in op.local_batches:  # this rank's share; the moments are all-reduced by the caller
        for start in range(0, _batch_size(batch), chunk):
            part = _slice(batch, start, start + chunk)
            size = _batch_size(part)
            grads = None
            if use_vmap:
                try:
                    grads = batched(weights, part)
                except RuntimeError as err:
                    log.warning("per-sample gradients: vmap cannot batch this model (%s); one backward pass per "
                                "sample instead", " ".join(str(err).split())[:160])
                    use_vmap = False
            if grads is None:
                rows: dict[str, list[torch.Tensor]] = {k: [] for k in params}
                for i in range(size):
                    parts = torch.autograd.grad(op.loss_fn(op.model, _slice(part, i, i + 1)), list(params.values()),
                                                allow_unused=True)
                    for key, p, g in zip(params, params.values(), parts):
                        rows[key].append(torch.zeros_like(p) if g is None else g.detach())
                grads = {k: torch.stack(v) for k, v in rows.items()}
            yield grads, size


def linear_stderr(op: CurvatureOperator, errors: Mapping[str, torch.Tensor], *, chunk: int | None = None,
                  use_vmap: bool = True) -> dict[str, np.ndarray]:
    """Standard error of g.d per layer and candidate.

    Args:
        op: the curvature operator (calibration batches; each batch is split along dimension 0 of every tensor).
        errors: layer name -> (K, *weight.shape) stacked candidate errors d.
        chunk: samples per vmap call (None: :func:`chunk_for_memory`, about 1 GiB per call).
        use_vmap: False forces one backward pass per sample (what models vmap cannot batch get anyway).

    Returns:
        layer name -> (K,) standard errors (the loss's unit), from per-sample gradients.

    Raises:
        ProblemError(field="calibration"): fewer than 2 calibration samples.
    """
    from cetopt.curvature.signals import _call, _unsqueeze

    names = [n for n in op.names if n in errors]
    if op.stationary:  # every per-sample gradient of a fidelity objective is 0 at its reference weights
        log.info("linear_stderr: 0 (fidelity objective at its reference weights: every per-sample gradient is 0)")
        return {n: np.zeros(len(errors[n])) for n in names}
    from cetopt.curvature.layers import weight_key

    keys = {n: weight_key(op.model, n) for n in names}
    by_name = dict(zip(op.names, op.params))
    params = {keys[n]: by_name[n] for n in names}
    weights = {k: p.detach() for k, p in params.items()}
    others = {k: v.detach() for k, v in op.model.named_parameters() if k not in weights}
    buffers = dict(op.model.named_buffers())
    flat = {n: errors[n].detach().to(device=op.device, dtype=weights[keys[n]].dtype).reshape(len(errors[n]), -1)
            for n in names}

    def sample_loss(w: dict[str, torch.Tensor], sample: Batch) -> torch.Tensor:
        return _call(op.model, {**others, **w}, buffers, op.loss_fn, _unsqueeze(sample))

    sums = {n: torch.zeros(len(flat[n]), dtype=torch.float64) for n in names}
    squares = {n: torch.zeros(len(flat[n]), dtype=torch.float64) for n in names}
    count = 0
    with eval_mode(op.model):
        chunk = chunk or chunk_for_memory(op)
        for grads, size in _per_sample_gradients(op, params, sample_loss, chunk, use_vmap):
            for n in names:
                proj = (grads[keys[n]].reshape(grads[keys[n]].shape[0], -1) @ flat[n].T).double().cpu()
                sums[n] += proj.sum(dim=0)
                squares[n] += (proj ** 2).sum(dim=0)
            count += size
    return _standard_errors(names, sums, squares, count)


def _standard_errors(names: list[str], sums: Mapping[str, torch.Tensor], squares: Mapping[str, torch.Tensor],
                     count: int) -> dict[str, np.ndarray]:
    """Layer -> (K,) standard errors of the mean from per-sample sums and sums of squares of g.d (all-reduced over
    torchrun ranks first: each rank saw its shard of the samples, and the moments are sums)."""
    from cetopt import distributed

    reduced = distributed.all_reduce_sum([*(sums[n] for n in names), *(squares[n] for n in names),
                                          torch.tensor([float(count)], dtype=torch.float64)])
    total = dict(zip(names, reduced[:len(names)]))
    square = dict(zip(names, reduced[len(names):2 * len(names)]))
    count = int(reduced[-1].item())
    if count < 2:
        raise ProblemError(f"the standard error of g.d needs >= 2 calibration samples, got {count}",
                           field="calibration")
    out = {}
    for n in names:
        mean = total[n] / count
        variance = torch.clamp((square[n] - count * mean ** 2) / (count - 1), min=0.0)
        out[n] = torch.sqrt(variance / count).numpy()
    return out

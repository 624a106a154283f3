"""The ``measured`` signal: each candidate's loss change measured directly, by swapping the layer's compressed
weight in alone (every other layer at full precision) and running the calibration batches forward.

Forward passes only: L layers x K candidates x B batches; no curvature model is involved, so the value includes
every order of the Taylor series (and the calibration noise of g.d, which it cannot tell apart).

Where the model traces with torch.fx (:mod:`cetopt.curvature.prefix`), each batch runs once in full and every
candidate then runs only its layer and the nodes downstream of it, the upstream activations read from that
record: the same numbers as full forwards (tested), for a fraction of the work on a deep network (the stem's
candidates cost a full pass, the classifier's almost nothing; speed in benchmarks/measured_prefix.py).
A module called more than once runs from its first call on, with the candidate weight in every call. Elsewhere,
and for layers that are no module call in the trace (a weight used directly, as nn.MultiheadAttention's out_proj),
the weight is swapped into the model and the whole batch runs forward.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from cetopt.curvature.operator import CurvatureOperator, eval_mode
from cetopt.curvature.progress import progress


def measured_changes(op: CurvatureOperator, weights: Mapping[str, Sequence[torch.Tensor]], *, prefix: bool = True,
                     show_progress: bool = False) -> dict[str, np.ndarray]:
    """Layer name -> (K,) measured change of the mean calibration loss with candidate k's weight swapped in.

    ``weights[name]`` holds the K compressed weights (each shaped like the layer's weight). ``prefix``: run only
    each layer's downstream graph from recorded activations where the model traces (False: full forwards
    everywhere, the reference). The operator's model is restored exactly (the original weight is copied back)
    even when a forward pass raises. Under torchrun each rank runs its shard of the batches; sums are all-reduced.
    """
    from cetopt import distributed
    from cetopt.curvature.prefix import prefix_runner

    names = list(weights)
    params = dict(zip(op.names, op.params))
    sums = {n: torch.zeros(len(weights[n]), dtype=torch.float64) for n in names}
    base = torch.zeros(1, dtype=torch.float64)
    runner = prefix_runner(op.model, op.loss_fn, op.names) if prefix else None
    bar = progress(total=len(op.local_batches) * sum(len(weights[n]) for n in names), desc="measured changes",
                   disable=not show_progress)
    try:
        with torch.no_grad(), eval_mode(op.model):
            for batch in op.local_batches:
                recorded = runner is not None and runner.record(op.model, batch)
                base += float(runner.loss) if recorded else float(op.loss_fn(op.model, batch))  # type: ignore[union-attr]
                for name in names:
                    if recorded and runner.supports(name):  # type: ignore[union-attr]
                        for k, w in enumerate(weights[name]):
                            w = w.to(device=params[name].device, dtype=params[name].dtype)
                            sums[name][k] += float(runner.loss_with(name, w))  # type: ignore[union-attr]
                    else:
                        sums[name] += _swapped_losses(op, params[name], weights[name], batch)
                    bar.update(len(weights[name]))
                if recorded:
                    runner.release()  # type: ignore[union-attr]
    finally:
        bar.close()
    count = torch.tensor([float(len(op.local_batches))], dtype=torch.float64)
    reduced = distributed.all_reduce_sum([base, count, *(sums[n] for n in names)])
    mean_base = float(reduced[0][0] / reduced[1][0])
    return {n: (total / reduced[1][0] - mean_base).numpy() for n, total in zip(names, reduced[2:])}


def _swapped_losses(op: CurvatureOperator, param: torch.Tensor, candidates: Sequence[torch.Tensor],
                    batch: object) -> torch.Tensor:
    """(K,) float64 loss of ``batch`` with each candidate copied into ``param`` in turn (restored after)."""
    saved = param.detach().clone()
    losses = torch.zeros(len(candidates), dtype=torch.float64)
    try:
        for k, w in enumerate(candidates):
            param.copy_(w.to(device=param.device, dtype=param.dtype))
            losses[k] = float(op.loss_fn(op.model, batch))
    finally:
        param.copy_(saved)
    return losses

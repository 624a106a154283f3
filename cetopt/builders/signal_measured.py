"""The ``measured`` signal: each candidate's loss change measured directly, by swapping the layer's compressed
weight in alone (every other layer at full precision) and running the calibration batches forward.

Forward passes only: L layers x K candidates x B batches; no curvature model is involved, so the value includes
every order of the Taylor series (and the calibration noise of g.d, which it cannot tell apart).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from cetopt.curvature.operator import CurvatureOperator, eval_mode


def _mean_loss(op: CurvatureOperator) -> float:
    """Mean loss over every calibration batch (under torchrun each rank holds a shard: sums are all-reduced)."""
    from cetopt import distributed

    local = torch.tensor([sum(float(op.loss_fn(op.model, b)) for b in op.local_batches),
                          float(len(op.local_batches))], dtype=torch.float64)
    total, count = distributed.all_reduce_sum([local])[0].tolist()
    return total / count


def measured_changes(op: CurvatureOperator, weights: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, np.ndarray]:
    """Layer name -> (K,) measured change of the mean calibration loss with candidate k's weight swapped in.

    ``weights[name]`` holds the K compressed weights (each shaped like the layer's weight). The operator's model
    is restored exactly (the original weight is copied back) even when a forward pass raises.
    """
    params = dict(zip(op.names, op.params))
    out: dict[str, np.ndarray] = {}
    with torch.no_grad(), eval_mode(op.model):
        base = _mean_loss(op)
        for name, candidates in weights.items():
            param = params[name]
            saved = param.detach().clone()
            changes = []
            try:
                for w in candidates:
                    param.copy_(w.to(device=param.device, dtype=param.dtype))
                    changes.append(_mean_loss(op) - base)
            finally:
                param.copy_(saved)
            out[name] = np.asarray(changes, dtype=np.float64)
    return out

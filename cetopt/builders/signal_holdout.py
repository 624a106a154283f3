"""The ``linear_holdout`` signal: each candidate's first-order term g.d with g the gradient of the mean loss
on the held-out validation batches (``ModelSpec.validation``), disjoint from the calibration data that the
other signals use. A gain that is real shows on both splits; one that is noise has an independent sign."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from cetopt.curvature.operator import Batch, CurvatureOperator
from cetopt.errors import ProblemError


def linear_holdout(op: CurvatureOperator, validation: Sequence[Batch], errors: Mapping[str, torch.Tensor]
                   ) -> dict[str, np.ndarray]:
    """Layer name -> (K,) g_val.d for the stacked candidate errors ``errors[name]`` (K, *weight.shape).

    Raises:
        ProblemError(field="validation"): no validation batches were given.
    """
    if not validation:
        raise ProblemError("this cost model needs held-out validation batches: give ModelSpec.validation (or "
                           "build(..., validation=batches)), disjoint from the calibration data", field="validation")
    held = CurvatureOperator(op.source_model, op.loss_fn, validation, layers=op.names, device=op.device,
                             dtype=op.dtype, cache_graph=False)
    _, gradient = held.loss_and_gradient()
    out = {}
    for name, g in zip(held.names, gradient):
        if name in errors:
            d = errors[name].detach().double().cpu().reshape(len(errors[name]), -1)
            out[name] = (d @ g.detach().double().cpu().reshape(-1)).numpy()
    return out

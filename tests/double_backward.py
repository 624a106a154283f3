"""The independent reference for quadratic forms in tests: e' H e of one parameter by a float64 double backward
through the whole model (torch.func.functional_call with the parameter moved along e), attention on the math
SDPA kernel, which has a double backward."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def exact_form(model: nn.Module, parameter: str, weight: torch.Tensor, e: torch.Tensor, batches: Sequence[Any],
               loss: Callable[[Callable[[torch.Tensor], torch.Tensor], Any], torch.Tensor]) -> float:
    """Mean over ``batches`` of d^2/dt^2 loss(W + t e) at t = 0 for the model parameter ``parameter`` (its
    current value ``weight``); ``loss(forward, batch)`` calls ``forward(x)`` for the moved model."""
    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    total = torch.zeros((), dtype=torch.float64)
    for batch in batches:
        moved = {parameter: weight.detach() + t * e}
        with sdpa_kernel(SDPBackend.MATH):
            value = loss(lambda x: torch.func.functional_call(model, moved, (x,)), batch)
            (slope,) = torch.autograd.grad(value, t, create_graph=True)
            (curvature,) = torch.autograd.grad(slope, t)
        total = total + curvature
    return float(total) / len(batches)

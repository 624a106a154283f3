"""Quadratic forms of one layer from its output, recorded with a forward hook, for models torch.fx cannot trace.

Where the model has data-dependent control flow (so no prefix can be cached), a hook on the layer still records
its input and replaces its output z by a leaf copy: one forward of the batch with every parameter frozen builds a
graph from z on only, and, where z is affine in the layer's weight (checked on the recorded input, as prefix
caching does: :func:`cetopt.curvature.leaves.affine_problem`), e' H_ll e = dz' (d^2 L / dz^2) dz with
dz = z(e) - z(0), the layer replayed through ``torch.func.functional_call``. The products run through the suffix
alone, without the layer's weight-gradient kernels and without the other layers' first-order graphs. Modules
called more than once, or whose output is not affine in the weight, are refused (the full graph serves them).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from cetopt import distributed
from cetopt.curvature.leaves import affine_problem
from cetopt.curvature.operator import CurvatureOperator, eval_mode, second_order_attention


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Within: no parameter of ``model`` requires grad (so a forward builds no graph upstream of a leaf)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _detached(value: Any) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, value)


def hooked_forms(operator: CurvatureOperator, name: str, block: torch.Tensor) -> torch.Tensor | str:
    """(K,) float64 e_k' H_ll e_k of the mean calibration loss for layer ``name`` from its hooked output, ``block``
    being (K, *weight shape); or, as text, why the layer cannot take this path."""
    module = dict(operator.model.named_modules())[name]
    weight = module.weight
    sums = torch.zeros(block.shape[0], dtype=torch.float64, device=block.device)
    checked = False
    for batch in operator.local_batches:
        state: dict[str, Any] = {"calls": 0}

        def hook(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
            state["calls"] += 1
            if state["calls"] > 1 or not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return None
            state["args"], state["kwargs"] = _detached(args), _detached(kwargs)
            state["z"] = output.detach().requires_grad_(True)
            return state["z"]

        handle = module.register_forward_hook(hook, with_kwargs=True)
        try:
            with eval_mode(operator.model), frozen(operator.model), second_order_attention():
                loss = operator.loss_fn(operator.model, batch)
        finally:
            handle.remove()
        if state["calls"] != 1 or "z" not in state:
            return (f"module {name} is called {state['calls']} times" if state["calls"] != 1 else
                    f"module {name} ({type(module).__name__}): its output is not one floating-point tensor")

        def replay(e: torch.Tensor, state: dict[str, Any] = state) -> Any:
            return torch.func.functional_call(module, {"weight": e}, state["args"], state["kwargs"], strict=False)

        if not checked:
            problem = affine_problem(replay, weight, what="its weight")
            if problem is not None:
                return f"module {name} ({type(module).__name__}): {problem}"
            checked = True
        z = state["z"]
        with second_order_attention():
            (g,) = torch.autograd.grad(loss, z, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:  # no curvature through this batch
            continue
        with torch.no_grad():
            zero = replay(torch.zeros_like(weight))
        for k, e in enumerate(block):
            with torch.no_grad():
                dz = replay(e) - zero
            (hz,) = torch.autograd.grad(g, z, grad_outputs=dz, retain_graph=True, allow_unused=True)
            if hz is not None:
                sums[k] += (dz * hz).sum().double()
    (total,) = distributed.all_reduce_sum([sums])
    return total / len(operator.batches)

"""Quadratic forms of layers from their outputs, recorded with forward hooks, for models torch.fx cannot trace.

Where the model has data-dependent control flow (so no prefix can be cached), hooks on the layers still record
each layer's input and add a zero leaf delta_l to its output z_l. One forward of a batch with every parameter
frozen then builds a graph that starts at the deltas, and one backward gives every dL/dz_l (= dL/d delta_l) with
its graph. Where z_l is affine in the layer's weight (checked on the recorded input, as prefix caching does:
:func:`cetopt.curvature.leaves.affine_problem`), e' H_ll e = dz' (d^2 L / dz_l^2) dz with dz = z_l(e) - z_l(0),
the layer replayed through ``torch.func.functional_call``: the products skip the layers' weight-gradient kernels.
Modules called more than once, or whose output is not affine in the weight, are refused (the full graph serves
them). Like the full graph, one batch's graph serves every layer; unlike prefix caching, nothing upstream is
skipped.
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


def hooked_forms(operator: CurvatureOperator, blocks: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """e_k' H_ll e_k of the mean calibration loss from hooked outputs, for the layers of ``blocks`` (name ->
    (K, *weight shape)): (name -> (K,) float64 for the layers served, name -> why not for the others)."""
    modules = dict(operator.model.named_modules())
    sums = {n: torch.zeros(b.shape[0], dtype=torch.float64, device=b.device) for n, b in blocks.items()}
    refused: dict[str, str] = {n: f"{n} is a bare Parameter: no module output of its own to hook"
                               for n in blocks if n not in modules}
    checked: set[str] = set()
    for batch in operator.local_batches:
        live = [n for n in blocks if n not in refused]
        if not live:
            break
        state: dict[str, dict[str, Any]] = {n: {"calls": 0} for n in live}

        def hook_for(name: str) -> Any:
            def hook(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
                record = state[name]
                record["calls"] += 1
                if record["calls"] > 1 or not isinstance(output, torch.Tensor) or not output.is_floating_point():
                    return None
                record["args"], record["kwargs"] = _detached(args), _detached(kwargs)
                record["delta"] = torch.zeros_like(output, requires_grad=True)
                return output + record["delta"]  # not a leaf: in-place ops downstream stay legal
            return hook

        handles = [modules[n].register_forward_hook(hook_for(n), with_kwargs=True) for n in live]
        try:
            with eval_mode(operator.model), frozen(operator.model), second_order_attention():
                loss = operator.loss_fn(operator.model, batch)
        finally:
            for handle in handles:
                handle.remove()
        for name in live:
            problem = _refusal(name, modules[name], state[name], name not in checked)
            if problem is not None:
                refused[name] = problem
            checked.add(name)
        live = [n for n in live if n not in refused]
        if not live:
            continue
        with second_order_attention():
            grads = torch.autograd.grad(loss, [state[n]["delta"] for n in live], create_graph=True, allow_unused=True)
        for name, g in zip(live, grads):
            if g is None or not g.requires_grad:  # no curvature through this batch
                continue
            replay, delta = _replay(modules[name], state[name]), state[name]["delta"]
            with torch.no_grad():
                zero = replay(torch.zeros_like(modules[name].weight))
            for k, e in enumerate(blocks[name]):
                with torch.no_grad():
                    dz = replay(e) - zero
                (hz,) = torch.autograd.grad(g, delta, grad_outputs=dz, retain_graph=True, allow_unused=True)
                if hz is not None:
                    sums[name][k] += (dz * hz).sum().double()
    served = [n for n in blocks if n not in refused]
    reduced = distributed.all_reduce_sum([sums[n] for n in served]) if served else []
    return {n: total / len(operator.batches) for n, total in zip(served, reduced)}, refused


def _replay(module: nn.Module, record: dict[str, Any]) -> Any:
    """weight -> the module's recorded call replayed with that weight."""
    def replay(e: torch.Tensor) -> Any:
        return torch.func.functional_call(module, {"weight": e}, record["args"], record["kwargs"], strict=False)
    return replay


def _refusal(name: str, module: nn.Module, record: dict[str, Any], check_affine: bool) -> str | None:
    """Why the hooked path cannot serve this layer on this batch (None: it can)."""
    if record["calls"] != 1:
        return f"module {name} is called {record['calls']} times"
    if "delta" not in record:
        return f"module {name} ({type(module).__name__}): its output is not one floating-point tensor"
    if check_affine:
        problem = affine_problem(_replay(module, record), module.weight, what="its weight")
        if problem is not None:
            return f"module {name} ({type(module).__name__}): {problem}"
    return None

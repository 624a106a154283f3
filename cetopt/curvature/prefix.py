"""Prefix caching: a layer's quadratic forms e' H_ll e need only the layer's input and the forward from the
layer on. The model is traced once with torch.fx; one forward pass per batch records every node's value
(the prefix activations); then, for each layer, only the nodes downstream of that layer run again, with
the layer's weight as the only leaf that autograd differentiates, and the first-order graph of that
suffix gives the layer's Hessian-vector products. Nothing upstream of the layer is recomputed or kept in
a graph, and only one layer's graph is alive at a time (the full-graph path keeps every layer's).

For Linear and Conv layers the products go one step further: the layer's output z = W * x + b is
linear in W, so e' H_ll e = dz' (d^2 L / dz^2) dz with dz = e * x (the layer applied with weight e and no
bias); the graph starts at the recorded output z, and the layer's own weight-gradient kernels (slow for
depthwise convolutions on the CPU) drop out of every product (:meth:`PrefixRunner.output_first_order`).

Where the model cannot be traced, the traced graph does not reproduce the model's loss, the loss
function calls the model other than once with positional tensors, or a layer is called more than once,
:func:`prefix_runner` returns None and callers use the full graph (a debug log says why).

Measured on MobileNetV2 (16 images at 224x224, 1 thread, trained weights, a machine loaded 11-16 on 2
cores): 5 quadratic forms of features.2.conv.0.0 took 79 s on the full graph (after its 15 s build); from
the cached input 5 + 64 s; from the recorded output 6 + 68 s against 10 + 87 s from the input in a paired
run; for features.9.conv.2 all paths tie (about 20 s). Vmapping the 5 products was 1.2-1.5x slower than
a loop on the CPU, so candidates are batched only on CUDA.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import fx, nn

from cetopt.curvature.operator import Batch, LossFn

log = logging.getLogger(__name__)
LINEAR_IN_WEIGHT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Proxy(nn.Module):
    """Stands in for the model inside ``loss_fn(model, batch)``; counts the calls."""

    def __init__(self, run: Callable[..., Any]) -> None:
        super().__init__()
        self.run = run
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("prefix caching needs positional model inputs")
        self.calls += 1
        return self.run(*args)


class _Recorder(fx.Interpreter):
    """Runs the traced graph and keeps every node's value (detached)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=False)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n] = value.detach() if isinstance(value, torch.Tensor) else value
        return value


class _Suffix(fx.Interpreter):
    """Runs only the nodes downstream of one layer, with that layer's weight replaced by ``weight`` (or, with
    ``output``, the layer's output replaced by that tensor)."""

    def __init__(self, module: fx.GraphModule, values: dict[fx.Node, Any], downstream: set[fx.Node], layer: str,
                 weight: torch.Tensor, output: bool = False) -> None:
        super().__init__(module)
        self.values, self.downstream, self.layer, self.weight, self.at_output = values, downstream, layer, weight, output

    def run_node(self, n: fx.Node) -> Any:
        if n not in self.downstream and n.op != "output":
            return self.values[n]
        return super().run_node(n)

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        if target == self.layer and self.at_output:
            return self.weight
        if target == self.layer:
            module = self.module.get_submodule(target)
            return torch.func.functional_call(module, {"weight": self.weight}, args, kwargs, strict=False)
        return super().call_module(target, args, kwargs)


class PrefixRunner:
    """The traced model; :meth:`record` one batch, then :meth:`first_order` per layer (see module docstring)."""

    def __init__(self, traced: fx.GraphModule, loss_fn: LossFn) -> None:
        self.traced, self.loss_fn = traced, loss_fn
        self.values: dict[fx.Node, Any] | None = None
        self.batch: Batch = None
        self._nodes = {n.target: [m for m in traced.graph.nodes if m.op == "call_module" and m.target == n.target]
                       for n in traced.graph.nodes if n.op == "call_module"}

    def supports(self, layer: str) -> bool:
        """True when ``layer`` is one module called exactly once in the traced graph."""
        return len(self._nodes.get(layer, [])) == 1

    def record(self, model: nn.Module, batch: Batch) -> bool:
        """Run ``batch`` once, keeping the prefix values; False (and a debug log) when the traced graph does not
        reproduce ``loss_fn(model, batch)`` or the loss calls the model other than once."""
        recorder = _Recorder(self.traced)
        proxy = _Proxy(recorder.run)
        try:
            with torch.no_grad():
                traced_loss = self.loss_fn(proxy, batch)
                loss = self.loss_fn(model, batch)
        except Exception as err:  # noqa: BLE001 - any failure means: use the full graph
            log.debug("prefix caching off: the traced model failed on the loss function (%s: %s); using the full "
                      "graph", type(err).__name__, err)
            return False
        if proxy.calls != 1 or not torch.allclose(traced_loss, loss, rtol=1e-5, atol=1e-7):
            log.debug("prefix caching off: the loss calls the model %d times or the traced graph gives another loss "
                      "(%s vs %s); using the full graph", proxy.calls, float(traced_loss), float(loss))
            return False
        self.values, self.batch = recorder.values, batch
        return True

    def first_order(self, layer: str, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, w): the gradient of the recorded batch's loss w.r.t. a leaf copy ``w`` of the layer's weight,
        with its graph (create_graph), built from the layer's input on; products are grad(g, w, v)."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        (start,) = self._nodes[layer]
        downstream = _downstream(start)
        w = weight.detach().requires_grad_(True)
        proxy = _Proxy(lambda *args: _Suffix(self.traced, self.values, downstream, layer, w).run(*args))  # type: ignore[arg-type]
        loss = self.loss_fn(proxy, self.batch)
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        return g, w

    def output_first_order(self, layer: str) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
        """(g_z, z, tangent): the gradient of the recorded batch's loss w.r.t. a leaf copy ``z`` of the layer's
        recorded output, with its graph, and ``tangent(e)`` = dz, the output change for a weight change e.
        None when the layer is not a Linear/Conv called with one positional input (use :meth:`first_order`)."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        (start,) = self._nodes[layer]
        module = self.traced.get_submodule(layer)
        if not isinstance(module, LINEAR_IN_WEIGHT) or len(start.args) != 1 or start.kwargs:
            return None
        x = self.values[start.args[0]]
        z = self.values[start].clone().requires_grad_(True)
        proxy = _Proxy(lambda *args: _Suffix(self.traced, self.values, _downstream(start), layer, z,  # type: ignore[arg-type]
                                             output=True).run(*args))
        (g,) = torch.autograd.grad(self.loss_fn(proxy, self.batch), z, create_graph=True, allow_unused=True)
        no_bias = {"bias": torch.zeros_like(module.bias)} if getattr(module, "bias", None) is not None else {}

        def tangent(e: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, {"weight": e, **no_bias}, (x,), strict=False)

        return (g if g is not None else torch.zeros_like(z)), z, tangent

    def release(self) -> None:
        """Drop the recorded values."""
        self.values, self.batch = None, None


def _downstream(start: fx.Node) -> set[fx.Node]:
    seen = {start}
    stack = [start]
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen


def prefix_runner(model: nn.Module, loss_fn: LossFn) -> PrefixRunner | None:
    """A PrefixRunner for ``model``, or None (debug log) when torch.fx cannot trace it."""
    try:
        traced = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - fx raises many types on data-dependent code
        log.debug("prefix caching off: torch.fx cannot trace %s (%s: %s); using the full graph",
                  type(model).__name__, type(err).__name__, str(err).splitlines()[0][:120] if str(err) else "")
        return None
    return PrefixRunner(traced, loss_fn)

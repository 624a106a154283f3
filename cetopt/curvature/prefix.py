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

Where the model is piecewise linear from such a layer's output on (every downstream node a listed linear or
piecewise-linear op: convolutions, eval-mode BatchNorm, ReLU/ReLU6, pooling, skips, products with a constant;
:func:`piecewise_linear_node`), the Hessian in the layer's weight is exactly the Gauss-Newton matrix and
:meth:`PrefixRunner.forward_forms` gets each form from one forward-mode jvp (the errors' tangents vmapped
through one pass, the primal computed once) and the loss's second derivative on the outputs alone: no
double backward. On MobileNetV2 this is 3.5-5x faster per layer (benchmarks/results/forms-forward.md).

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
import operator
from typing import Any, Callable

import torch
from torch import fx, nn

from cetopt.curvature.operator import Batch, LossFn

log = logging.getLogger(__name__)
LINEAR_IN_WEIGHT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FORWARD_CHUNK = 8  # errors per vmapped jvp: bounds the tangents' memory (8 x the suffix's activations)


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
        self.args = args
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
        self.loss: torch.Tensor | None = None  # the recorded batch's loss through the traced graph
        self.batch: Batch = None
        self.inputs: tuple[Any, ...] = ()
        self.stationary = False  # True: the loss's output gradient is 0 (a fidelity objective at its reference)
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
        self.values, self.batch, self.inputs, self.loss = recorder.values, batch, proxy.args, traced_loss.detach()
        return True

    def loss_with(self, layer: str, weight: torch.Tensor) -> torch.Tensor:
        """The recorded batch's loss with ``layer``'s weight replaced by ``weight`` (same shape), no graph kept:
        only the layer and the nodes downstream of it run, everything upstream is read from the record."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        (start,) = self._nodes[layer]
        downstream = _downstream(start)
        proxy = _Proxy(lambda *args: _Suffix(self.traced, self.values, downstream, layer, weight).run(*args))  # type: ignore[arg-type]
        with torch.no_grad():
            return self.loss_fn(proxy, self.batch).detach()

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
        found = self._output_tangent(layer)
        if found is None:
            return None
        start, tangent = found
        z = self.values[start].clone().requires_grad_(True)  # type: ignore[index]
        proxy = _Proxy(lambda *args: _Suffix(self.traced, self.values, _downstream(start), layer, z,  # type: ignore[arg-type]
                                             output=True).run(*args))
        (g,) = torch.autograd.grad(self.loss_fn(proxy, self.batch), z, create_graph=True, allow_unused=True)
        return (g if g is not None else torch.zeros_like(z)), z, tangent

    def _output_tangent(self, layer: str) -> tuple[fx.Node, Callable[[torch.Tensor], torch.Tensor]] | None:
        """(the layer's node, tangent(e) = e * x: the layer's output change for a weight change e, bias left out)
        for a Linear/Conv called with one positional input; None for any other layer."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        (start,) = self._nodes[layer]
        module = self.traced.get_submodule(layer)
        if not isinstance(module, LINEAR_IN_WEIGHT) or len(start.args) != 1 or start.kwargs:
            return None
        x = self.values[start.args[0]]
        no_bias = {"bias": torch.zeros_like(module.bias)} if getattr(module, "bias", None) is not None else {}

        def tangent(e: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, {"weight": e, **no_bias}, (x,), strict=False)

        return start, tangent

    def nonlinear_node(self, layer: str) -> str | None:
        """The first node downstream of ``layer`` that is not piecewise linear in the layer's output (as text),
        or None when every one is (see :func:`piecewise_linear_node`)."""
        (start,) = self._nodes[layer]
        downstream = _downstream(start)
        for n in self.traced.graph.nodes:
            if n in downstream and n is not start and not piecewise_linear_node(self.traced, n, downstream):
                return f"{n.op} {getattr(n.target, '__name__', n.target)} ({n.name})"
        return None

    def forward_forms(self, layer: str, block: torch.Tensor) -> torch.Tensor | None:
        """(K,) float64 e_k' H_ll e_k of the recorded batch by forward mode, for a Linear/Conv layer whose suffix
        is piecewise linear in its output z (:meth:`nonlinear_node` is None); None otherwise.

        There the model output is locally linear in z, o(z + dz) = o(z) + J dz, so the Hessian of the loss in
        the layer's weight is exactly J' (d^2 loss / do^2) J (the Gauss-Newton matrix; autograd's double
        backward gives the same, a ReLU's second derivative being 0): one jvp of the suffix gives J dz, and
        the loss's second derivative along it costs a pass over the outputs only.
        """
        found = self._output_tangent(layer)
        if found is None:
            return None
        # at a fidelity objective's reference weights (``stationary``, set by the caller) the loss's gradient in
        # the outputs is 0, so J' H_o J is the exact Hessian whatever the suffix holds (attention, GELU, norms)
        reason = None if self.stationary else self.nonlinear_node(layer)
        if reason is not None:
            log.debug("forward-mode forms off for %s: %s is not piecewise linear; using double backward", layer, reason)
            return None
        start, tangent = found
        downstream = _downstream(start)
        z = self.values[start]  # type: ignore[index]

        def suffix(z_: torch.Tensor) -> Any:
            return _Suffix(self.traced, self.values, downstream, layer, z_, output=True).run(*self.inputs)  # type: ignore[arg-type]

        def output_change(dz: torch.Tensor) -> Any:
            return torch.func.jvp(suffix, (z,), (dz,))[1]

        out = suffix(z)
        # dz = e * x per error in a loop (vmapping a convolution over its weight is slow on the CPU, depthwise
        # above all), then the K tangents through one vmapped jvp: the primal runs once, where a loop of jvps
        # re-runs it each time (timings in benchmarks/forms_forward.py)
        dzs = torch.stack([tangent(e) for e in block])
        directions = torch.func.vmap(output_change, chunk_size=FORWARD_CHUNK)(dzs)
        values = [self._loss_curvature(out, torch.utils._pytree.tree_map(lambda d: d[k], directions))
                  for k in range(block.shape[0])]
        return torch.stack(values).to(block.device)

    def _loss_curvature(self, out: Any, direction: Any) -> torch.Tensor:
        """d^2/ds^2 of loss_fn at the model output ``out + s * direction``, s = 0 (float64 scalar)."""
        leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        s = torch.zeros((), dtype=leaves[0].dtype if leaves else torch.float32, device=leaves[0].device if leaves else None,
                        requires_grad=True)
        moved = torch.utils._pytree.tree_map(
            lambda o, d: o + s * d if isinstance(o, torch.Tensor) and torch.is_floating_point(o) else o, out, direction)
        loss = self.loss_fn(_Proxy(lambda *args: moved), self.batch)
        (slope,) = torch.autograd.grad(loss, s, create_graph=True, allow_unused=True)
        if slope is None or not slope.requires_grad:
            return torch.zeros((), dtype=torch.float64, device=s.device)
        (curvature,) = torch.autograd.grad(slope, s)
        return curvature.detach().double()

    def release(self) -> None:
        """Drop the recorded values."""
        self.values, self.batch, self.inputs, self.loss = None, None, (), None


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


# Modules whose output is piecewise linear in their input (their parameters and buffers being constants): the
# forward-mode forms are exact through them. BatchNorm and dropout only in eval mode.
PIECEWISE_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Identity, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
    nn.ConvTranspose2d, nn.ConvTranspose3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.PReLU, nn.MaxPool1d,
    nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.Upsample)
EVAL_ONLY_MODULES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
_F = torch.nn.functional
# functions linear or piecewise linear in every tensor argument
PIECEWISE_LINEAR_FUNCTIONS = frozenset({
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, getattr, torch.add, torch.sub,
    torch.neg, torch.flatten, torch.cat, torch.stack, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.mean, torch.sum, torch.relu, torch.clamp, torch.narrow, torch.chunk, torch.split,
    _F.relu, _F.relu6, _F.hardtanh, _F.leaky_relu, _F.adaptive_avg_pool1d, _F.adaptive_avg_pool2d,
    _F.adaptive_avg_pool3d, _F.avg_pool1d, _F.avg_pool2d, _F.avg_pool3d, _F.max_pool1d, _F.max_pool2d,
    _F.max_pool3d, _F.adaptive_max_pool1d, _F.adaptive_max_pool2d, _F.adaptive_max_pool3d, _F.pad})
# linear in each argument separately: piecewise linear while at most one argument depends on the layer
PRODUCT_FUNCTIONS = frozenset({operator.mul, operator.matmul, torch.mul, torch.matmul, torch.bmm, _F.linear,
                               _F.conv1d, _F.conv2d, _F.conv3d})
DIVISION_FUNCTIONS = frozenset({operator.truediv, torch.div})
PIECEWISE_LINEAR_METHODS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "permute", "transpose", "contiguous", "size", "dim",
    "squeeze", "unsqueeze", "mean", "sum", "relu", "clamp", "clamp_min", "clamp_max", "add", "sub", "neg", "expand",
    "expand_as", "t", "chunk", "split", "narrow", "__getitem__"})
PRODUCT_METHODS = frozenset({"mul", "matmul", "bmm"})
DIVISION_METHODS = frozenset({"div"})


_RULES = {"call_function": (PIECEWISE_LINEAR_FUNCTIONS, PRODUCT_FUNCTIONS, DIVISION_FUNCTIONS),
          "call_method": (PIECEWISE_LINEAR_METHODS, PRODUCT_METHODS, DIVISION_METHODS)}


def piecewise_linear_node(traced: fx.GraphModule, n: fx.Node, downstream: set[fx.Node]) -> bool:
    """True when node ``n`` of ``traced`` is piecewise linear in the values of the ``downstream`` nodes (those
    that depend on the layer): a listed module (BatchNorm and dropout in eval mode), function or method, a
    product with at most one factor downstream, a division whose divisor is not downstream."""
    def dependent(values: Any) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg(values, lambda a: found.append(a) if a in downstream else None)  # type: ignore[func-returns-value]
        return found

    if n.op in ("output", "placeholder", "get_attr"):
        return True
    if n.op == "call_module":
        module = traced.get_submodule(n.target)  # type: ignore[arg-type]
        if isinstance(module, EVAL_ONLY_MODULES):
            return not module.training
        return type(module) in PIECEWISE_LINEAR_MODULES
    if n.op not in _RULES:
        return False
    linear, products, divisions = _RULES[n.op]
    if n.target in linear:
        return True
    if n.target in products:
        return len(dependent((n.args, n.kwargs))) <= 1
    if n.target in divisions:
        return not dependent((n.args[1:], n.kwargs))
    return False

"""Prefix caching: a layer's quadratic forms e' H_ll e need only the layer's input and the forward from the
layer on. The model is traced once with torch.fx (:class:`cetopt.curvature.leaves.LeafTracer`: every
quantisable layer and every Linear/Conv/Embedding subclass stays one ``call_module`` node, whatever its
forward does); one forward pass per batch records every node's value (the prefix activations); then, for
each layer, only the nodes downstream of that layer run again, the layer replayed from its recorded input
with its weight swapped (``torch.func.functional_call`` on the module, so its own forward stays exact) as
the only leaf that autograd differentiates, and the first-order graph of that suffix gives the layer's
Hessian-vector products. Nothing upstream of the layer is recomputed or kept in a graph, and only one
layer's graph is alive at a time (the full-graph path keeps every layer's). A module called more than once
runs from its first call on with the weight swapped in every call: the Hessian of the shared weight, every
call's curvature and their cross terms summed. A layer that is never called as a module (nn.MultiheadAttention's
out_proj, read through its weight; its in_proj_weight, a bare Parameter) runs inside its nearest enclosing module
call, which is replayed with that weight swapped in (:meth:`PrefixRunner.site`).

Where a layer called once has an output z affine in its weight (checked numerically on the recorded input,
:func:`cetopt.curvature.leaves.affine_problem`; a plain Linear/Conv, a padding subclass or a LoRA-style
subclass are, a weight-standardised convolution is not), e' H_ll e = dz' (d^2 L / dz^2) dz with
dz = z(e) - z(0) (bias and adapters cancel); the graph starts at the recorded output z, and the layer's own
weight-gradient kernels (slow for depthwise convolutions on the CPU) drop out of every product
(:meth:`PrefixRunner.output_first_order`).

Where the model is piecewise linear from such a layer's output on (every downstream node a listed linear or
piecewise-linear op: convolutions, eval-mode BatchNorm, ReLU/ReLU6, pooling, skips, products with a constant,
a Linear/Conv subclass checked affine in its input, or a node that carries no floating-point tensor, e.g.
shape arithmetic; :meth:`PrefixRunner.nonlinear_node`), the Hessian in the layer's weight is exactly the
Gauss-Newton matrix and :meth:`PrefixRunner.forward_forms` gets each form from one forward-mode jvp (the
errors' tangents vmapped through one pass, the primal computed once) and the loss's second derivative on the
outputs alone: no double backward, which is faster per layer (benchmarks/results/forms-forward.md measures it on
MobileNetV2). Nested forward mode through LayerNorm/SiLU is not used (torch 2.13's
is wrong for ``F.layer_norm``): smooth suffixes take the double backward.

Where the model cannot be traced, the traced graph does not reproduce the model's loss, or the loss function
calls the model other than once with positional tensors, :func:`prefix_runner` returns None and callers use
the full graph; :func:`make_prefix_runner` says why (the coverage report records it).

The paths are compared on MobileNetV2 by benchmarks/measured_prefix.py and benchmarks/forms_forward.py. On
the CPU a vmapped batch of products is slower than a loop over them, so candidates are batched only on CUDA.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from torch import fx, nn

from cetopt.curvature.layers import layer_weight, weight_key
from cetopt.curvature.leaves import affine_problem, trace_with_leaves
from cetopt.curvature.operator import Batch, LossFn, second_order_attention
from cetopt.curvature.piecewise import piecewise_linear_node
from cetopt.curvature.replay import ModelProxy, Recorder, SuffixRunner, carries_float, downstream_of, plain_lookup
from cetopt.errors import ProblemError

log = logging.getLogger(__name__)
LINEAR_IN_WEIGHT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FORWARD_CHUNK = 8  # errors per vmapped jvp: bounds the tangents' memory (8 x the suffix's activations)


class PrefixRunner:
    """The traced model; :meth:`record` one batch, then :meth:`first_order` per layer (see module docstring)."""

    def __init__(self, traced: fx.GraphModule, loss_fn: LossFn) -> None:
        self.traced, self.loss_fn = traced, loss_fn
        self.values: dict[fx.Node, Any] | None = None
        self.loss: torch.Tensor | None = None  # the recorded batch's loss through the traced graph
        self.batch: Batch = None
        self.inputs: tuple[Any, ...] = ()
        self.stationary = False  # True: the loss's output gradient is 0 (a fidelity objective at its reference)
        self.failure: str | None = None  # why the last record() failed
        self._calls = {n.target: [m for m in traced.graph.nodes if m.op == "call_module" and m.target == n.target]
                       for n in traced.graph.nodes if n.op == "call_module"}
        self._affine: dict[str, str | None] = {}  # layer -> why its output is not affine in its weight (None: it is)
        self._zero: dict[str, torch.Tensor] = {}  # layer -> z(0) on the recorded batch

    def site(self, layer: str) -> tuple[str, str] | None:
        """(the module call that runs ``layer``'s weight, the weight's path inside that module): the layer itself
        and "weight" where it is a call of the traced graph, else its nearest enclosing module that is (an
        ``out_proj`` that nn.MultiheadAttention uses through its weight, a Linear inside a
        TransformerEncoderLayer leaf); None when no enclosing module is called either."""
        if layer in self._calls:
            return layer, "weight"
        key = weight_key(self.traced, layer)  # a bare Parameter's own path (nn.MultiheadAttention.in_proj_weight)
        parts = layer.split(".")
        for i in range(len(parts) - 1, 0, -1):
            caller = ".".join(parts[:i])
            if caller in self._calls:
                return caller, key[len(caller) + 1:]
        return None

    def _nodes(self, layer: str) -> list[fx.Node]:
        """The call nodes of the module that runs ``layer``'s weight (:meth:`site`)."""
        site = self.site(layer)
        return self._calls[site[0]] if site is not None else []

    def calls(self, layer: str) -> int:
        """How many times the module that runs ``layer``'s weight is called in the traced graph (0: none is)."""
        return len(self._nodes(layer))

    def own_call(self, layer: str) -> bool:
        """True when ``layer`` is itself a module call of the traced graph (not only inside its caller's)."""
        return layer in self._calls

    def supports(self, layer: str) -> bool:
        """True when ``layer``, or a module enclosing it, is called (once or more) in the traced graph."""
        return self.calls(layer) >= 1

    def _weight(self, layer: str) -> Any:
        try:
            return layer_weight(self.traced, layer)
        except ProblemError:
            return None

    def record(self, model: nn.Module, batch: Batch) -> bool:
        """Run ``batch`` once, keeping the prefix values; False (and a debug log, and :attr:`failure`) when the
        traced graph does not reproduce ``loss_fn(model, batch)`` or the loss calls the model other than once."""
        recorder = Recorder(self.traced)
        proxy = ModelProxy(recorder.run)
        try:
            with torch.no_grad():
                traced_loss = self.loss_fn(proxy, batch)
                loss = self.loss_fn(model, batch)
        except Exception as err:  # noqa: BLE001 - any failure means: use the full graph
            self.failure = f"the traced model failed on the loss function ({type(err).__name__}: {err})"
            log.debug("prefix caching off: %s; using the full graph", self.failure)
            return False
        if proxy.calls != 1 or not torch.allclose(traced_loss, loss, rtol=1e-5, atol=1e-7):
            self.failure = (f"the loss calls the model {proxy.calls} times or the traced graph gives another loss "
                            f"({float(traced_loss)} vs {float(loss)})")
            log.debug("prefix caching off: %s; using the full graph", self.failure)
            return False
        self.values, self.batch, self.inputs, self.loss = recorder.values, batch, proxy.args, traced_loss.detach()
        self.failure = None
        return True

    def _downstream(self, layer: str) -> set[fx.Node]:
        """Every node that depends on any call of ``layer`` (the calls included)."""
        out: set[fx.Node] = set()
        for node in self._nodes(layer):
            out |= downstream_of(node)
        return out

    def _suffix_proxy(self, layer: str, weight: torch.Tensor) -> ModelProxy:
        downstream = self._downstream(layer)
        site = self.site(layer)
        return ModelProxy(lambda *args: SuffixRunner(self.traced, self.values, downstream, site, weight).run(*args))  # type: ignore[arg-type]

    def loss_with(self, layer: str, weight: torch.Tensor) -> torch.Tensor:
        """The recorded batch's loss with ``layer``'s weight replaced by ``weight`` (same shape), no graph kept:
        only the layer and the nodes downstream of it run, everything upstream is read from the record."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        with torch.no_grad():
            return self.loss_fn(self._suffix_proxy(layer, weight), self.batch).detach()

    def first_order(self, layer: str, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, w): the gradient of the recorded batch's loss w.r.t. a leaf copy ``w`` of the layer's weight,
        with its graph (create_graph), built from the layer's (first) input on; products are grad(g, w, v)."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        w = weight.detach().requires_grad_(True)
        with second_order_attention():
            loss = self.loss_fn(self._suffix_proxy(layer, w), self.batch)
            (g,) = torch.autograd.grad(loss, w, create_graph=True)
        return g, w

    def output_first_order(self, layer: str) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
        """(g_z, z, tangent): the gradient of the recorded batch's loss w.r.t. a leaf copy ``z`` of the layer's
        recorded output, with its graph, and ``tangent(e)`` = dz, the output change for a weight change e.
        None when :meth:`shortcut_problem` refuses the layer (use :meth:`first_order`)."""
        found = self._output_tangent(layer)
        if found is None:
            return None
        start, tangent = found
        z = self.values[start].clone().requires_grad_(True)  # type: ignore[index]
        site = self.site(layer)
        proxy = ModelProxy(lambda *args: SuffixRunner(self.traced, self.values, downstream_of(start), site, z,  # type: ignore[arg-type]
                                             output=True).run(*args))
        with second_order_attention():
            (g,) = torch.autograd.grad(self.loss_fn(proxy, self.batch), z, create_graph=True, allow_unused=True)
        return (g if g is not None else torch.zeros_like(z)), z, tangent

    def _replay(self, node: fx.Node, key: str = "weight") -> Callable[[torch.Tensor], Any]:
        """weight -> the module call ``node`` replayed on its recorded arguments with that weight (at ``key``, its
        path inside the module)."""
        module = self.traced.get_submodule(node.target)  # type: ignore[arg-type]
        args = fx.node.map_arg(node.args, lambda a: self.values[a])  # type: ignore[index]
        kwargs = fx.node.map_arg(node.kwargs, lambda a: self.values[a])  # type: ignore[index]

        def replay(weight: torch.Tensor) -> Any:
            return torch.func.functional_call(module, {key: weight}, args, kwargs, strict=False)

        return replay

    def shortcut_problem(self, layer: str) -> str | None:
        """Why ``layer``'s output may not stand in for its weight (None: it may): the module is called other
        than once, or its output is not one tensor affine in its weight (torch's own Linear/Conv classes are by
        definition; any other class, subclasses included, is checked once on the recorded input)."""
        if self.values is None:
            raise RuntimeError("record() a batch first")
        nodes, site = self._nodes(layer), self.site(layer)
        caller = site[0] if site is not None else layer
        if len(nodes) != 1:
            return f"module {caller} is called {len(nodes)} times"
        weight = self._weight(layer)
        if not isinstance(weight, torch.Tensor):
            return f"layer {layer} has no weight tensor"
        module = self.traced.get_submodule(caller)
        if layer not in self._affine and self.own_call(layer) and (type(module) in LINEAR_IN_WEIGHT
                                                                   or plain_lookup(module)):
            # torch's own, called as itself: affine by definition (an Embedding's output is rows of its weight)
            self._affine[layer] = None
        if layer not in self._affine:
            assert site is not None
            problem = affine_problem(self._replay(nodes[0], site[1]), weight,
                                     what="its weight" if caller == layer else f"{layer}'s weight")
            self._affine[layer] = None if problem is None else \
                f"module {caller} ({type(module).__name__}): {problem}"
            if problem is not None:
                log.info("output shortcut off for %s: %s; exact per-layer products instead", layer, self._affine[layer])
        return self._affine[layer]

    def _output_tangent(self, layer: str) -> tuple[fx.Node, Callable[[torch.Tensor], torch.Tensor]] | None:
        """(the layer's node, tangent(e) = z(e) - z(0): the layer's output change for a weight change e, the
        bias and adapters cancelling) where :meth:`shortcut_problem` allows it; None otherwise."""
        if self.shortcut_problem(layer) is not None:
            return None
        (start,) = self._nodes(layer)
        replay = self._replay(start, self.site(layer)[1])  # type: ignore[index]
        if layer not in self._zero:
            with torch.no_grad():
                self._zero[layer] = replay(torch.zeros_like(self._weight(layer)))

        def tangent(e: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # a constant direction: no graph through the bias or adapters
                return replay(e) - self._zero[layer]

        return start, tangent

    def nonlinear_node(self, layer: str) -> str | None:
        """The first node downstream of ``layer`` that is not piecewise linear in the layer's output (as text),
        or None when every one is (see :func:`piecewise_linear_node`; nodes whose recorded value holds no
        floating-point tensor, such as shape arithmetic, are constants here; a Linear/Conv subclass counts as
        linear where it is checked affine in its input)."""
        downstream = self._downstream(layer)
        starts = set(self._nodes(layer))
        for n in self.traced.graph.nodes:
            if n not in downstream or n in starts or piecewise_linear_node(self.traced, n, downstream):
                continue
            if n.op == "call_module" and self._affine_leaf(n):
                continue
            if self.values is not None and n in self.values and not carries_float(self.values[n]):
                continue
            return f"{n.op} {getattr(n.target, '__name__', n.target)} ({n.name})"
        return None

    def _affine_leaf(self, n: fx.Node) -> bool:
        """True for a call of a Linear/Conv subclass with one tensor argument, checked affine in it."""
        module = self.traced.get_submodule(n.target)  # type: ignore[arg-type]
        if (self.values is None or not isinstance(module, LINEAR_IN_WEIGHT) or len(n.args) != 1 or n.kwargs
                or not isinstance(n.args[0], fx.Node) or not isinstance(self.values.get(n.args[0]), torch.Tensor)):
            return False
        key = f"input of {n.name}"
        if key not in self._affine:
            self._affine[key] = affine_problem(module, self.values[n.args[0]])
        return self._affine[key] is None

    def forward_problem(self, layer: str) -> str | None:
        """Why :meth:`forward_forms` cannot serve ``layer`` (None: it can): the shortcut's reason, or the first
        node downstream that is not piecewise linear."""
        problem = self.shortcut_problem(layer)
        if problem is not None or self.stationary:
            # at a fidelity objective's reference weights (``stationary``, set by the caller) the loss's gradient in
            # the outputs is 0, so J' H_o J is the exact Hessian whatever the suffix holds (attention, GELU, norms);
            # the output tangent itself still needs the layer's output affine in its weight (the shortcut)
            return problem
        node = self.nonlinear_node(layer)
        return None if node is None else f"{node} is not piecewise linear"

    def forward_forms(self, layer: str, block: torch.Tensor) -> torch.Tensor | None:
        """(K,) float64 e_k' H_ll e_k of the recorded batch by forward mode, for a layer whose output is affine in
        its weight and whose suffix is piecewise linear in that output (:meth:`forward_problem` is None); None
        otherwise.

        There the model output is locally linear in z, o(z + dz) = o(z) + J dz, so the Hessian of the loss in
        the layer's weight is exactly J' (d^2 loss / do^2) J (the Gauss-Newton matrix; autograd's double
        backward gives the same, a ReLU's second derivative being 0): one jvp of the suffix gives J dz, and
        the loss's second derivative along it costs a pass over the outputs only.
        """
        reason = self.forward_problem(layer)
        if reason is not None:
            log.debug("forward-mode forms off for %s: %s; using double backward", layer, reason)
            return None
        found = self._output_tangent(layer)
        assert found is not None  # forward_problem checked the shortcut
        start, tangent = found
        downstream = downstream_of(start)
        z = self.values[start]  # type: ignore[index]

        def suffix(z_: torch.Tensor) -> Any:
            return SuffixRunner(self.traced, self.values, downstream, self.site(layer), z_,  # type: ignore[arg-type]
                           output=True).run(*self.inputs)

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
        loss = self.loss_fn(ModelProxy(lambda *args: moved), self.batch)
        (slope,) = torch.autograd.grad(loss, s, create_graph=True, allow_unused=True)
        if slope is None or not slope.requires_grad:
            return torch.zeros((), dtype=torch.float64, device=s.device)
        (curvature,) = torch.autograd.grad(slope, s)
        return curvature.detach().double()

    def release(self) -> None:
        """Drop the recorded values."""
        self.values, self.batch, self.inputs, self.loss = None, None, (), None
        self._zero = {}


def make_prefix_runner(model: nn.Module, loss_fn: LossFn, layers: Sequence[str] = ()
                       ) -> tuple[PrefixRunner | None, str | None]:
    """(a PrefixRunner for ``model``, None) or (None, why not: torch.fx cannot trace it). ``layers`` are kept as
    leaves of the trace whatever their class (:class:`cetopt.curvature.leaves.LeafTracer`)."""
    try:
        traced = trace_with_leaves(model, layers)
    except Exception as err:  # noqa: BLE001 - fx raises many types on data-dependent code
        first = str(err).splitlines()[0][:120] if str(err) else ""
        reason = f"torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {first})"
        log.debug("prefix caching off: %s; using the full graph", reason)
        return None, reason
    return PrefixRunner(traced, loss_fn), None


def prefix_runner(model: nn.Module, loss_fn: LossFn, layers: Sequence[str] = ()) -> PrefixRunner | None:
    """A PrefixRunner for ``model``, or None (debug log) when torch.fx cannot trace it."""
    return make_prefix_runner(model, loss_fn, layers)[0]

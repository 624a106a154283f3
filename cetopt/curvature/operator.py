"""Gradients and Hessian-vector products of the mean calibration loss, restricted to chosen weights.

The loss is L(W) = mean over calibration batches of ``loss_fn(model, batch)``. Hessian-vector
products use double-backward autograd; with ``cache_graph`` the first-order graph of every batch is
built once and reused by every product (the cheapest path when many probes follow, measured in
benchmarks/curvature.py). Several vectors go through one backward pass with ``is_grads_batched``
(torch's vmap over the backward), so a block of probes, or one vector per layer, costs one pass.

The caller's model is never changed: it is copied when a device or dtype change is needed, and its
``training`` flag is restored.

Under torch.distributed (``torchrun``) every rank keeps its share of the calibration batches
(cetopt.distributed.shard) and every sum over batches is all-reduced, so each public method returns the
same numbers on every rank as a single process would (up to the order of floating-point additions).
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from cetopt import distributed
from cetopt._hooks import eval_mode  # re-exported for the curvature modules and the builders
from cetopt.curvature.layers import LayerRef, find_layers
from cetopt.errors import CetoptError, ProblemError

log = logging.getLogger(__name__)

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class CurvatureError(CetoptError):
    """A curvature computation produced NaN/inf or diverged; the message names the layer and quantity."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ProblemError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'", field="device") from None


def move_batch(batch: Batch, device: torch.device, dtype: torch.dtype | None = None) -> Batch:
    """Move every tensor of a (nested) batch to ``device``; floating tensors also to ``dtype``."""
    if isinstance(batch, torch.Tensor):
        if dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_batch(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(v, device, dtype) for v in batch)
    return batch


@contextmanager
def second_order_attention() -> Iterator[None]:
    """Within: scaled dot-product attention runs on torch's math kernel, the one whose backward can itself be
    differentiated (the flash kernel's backward cannot: "derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"), whatever kernel the
    model selects outside. Every graph that is differentiated twice is built inside it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


class CurvatureOperator:
    """First and second derivatives of the mean calibration loss w.r.t. the weights of ``layers``.

    Args:
        model: the network (left unchanged).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batches: the calibration data, a non-empty sequence of batches.
        layers: layer names to restrict to (default: every Linear/Conv/Embedding layer).
        device: "auto", "cpu", "cuda", ...
        dtype: compute dtype (e.g. torch.float64 for exactness tests); None keeps the model's.
        cache_graph: keep each batch's first-order graph for reuse by all products.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *,
                 layers: Sequence[str] | None = None, exclude: Sequence[str] = (), device: str | torch.device = "auto",
                 dtype: torch.dtype | None = None, cache_graph: bool = True) -> None:
        self.batches_cpu = list(batches)
        if not self.batches_cpu:
            raise ProblemError("the calibration data is empty; pass at least one batch", field="batches")
        self.device = resolve_device(device)
        self.dtype = dtype
        first = next(iter(model.parameters()), None)
        needs_copy = first is not None and (first.device != self.device or (dtype is not None and first.dtype != dtype))
        self.model = copy.deepcopy(model).to(device=self.device, dtype=dtype) if needs_copy else model
        self.source_model = model
        self.loss_fn = loss_fn
        self.layers: list[LayerRef] = find_layers(self.model, layers, exclude=exclude)
        self.params = [ref.weight for ref in self.layers]
        self.cache_graph = cache_graph
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None
        self.batches = [move_batch(b, self.device, dtype) for b in self.batches_cpu]
        self.local_batches = distributed.shard(self.batches)
        if distributed.is_distributed() and not self.local_batches:
            log.warning("rank %d has no calibration batch (%d batches, %d ranks): it idles; use at least as many "
                        "batches as ranks", distributed.rank(), len(self.batches), distributed.world_size())
        self.hvp_count = 0
        self.vmap_ok = True
        self.gradient_passes = 0  # backward passes loss_and_gradient ran (0 where the gradient is known to be 0)
        self._stationary: bool | None = None

    @property
    def stationary(self) -> bool:
        """Whether the loss is a fidelity objective (cetopt.losses) at the weights its FP32 references were recorded
        on: there the gradient, every per-sample gradient included, is exactly 0 and the Hessian is the
        Gauss-Newton matrix J' H_o J for any architecture (the output gradient that multiplies the network's own
        second derivatives is 0). Decided once, on the weights the operator was built with."""
        if self._stationary is None:
            from cetopt.losses import at_reference

            self._stationary = at_reference(self.loss_fn, self.model)
        return self._stationary

    @property
    def names(self) -> list[str]:
        return [ref.name for ref in self.layers]

    @property
    def shapes(self) -> list[torch.Size]:
        return [p.shape for p in self.params]

    def _loss(self, batch: Batch) -> torch.Tensor:
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ProblemError(f"loss_fn must return a scalar tensor, got {shape}; reduce it with .mean()",
                               field="loss_fn")
        if not torch.isfinite(loss):
            raise CurvatureError(f"the calibration loss is {loss.item()} on a batch; check the data and model")
        return loss

    def loss_and_gradient(self, *, show_progress: bool = True) -> tuple[float, list[torch.Tensor]]:
        """The mean loss and its gradient per layer weight (averaged over batches).

        At a fidelity objective's reference weights (:attr:`stationary`) the gradient is 0 by construction: the
        loss is computed by forward passes alone and no backward pass runs (logged at INFO)."""
        from cetopt.curvature.progress import progress

        total = torch.zeros((), dtype=torch.float64, device=self.device)
        grads = [torch.zeros_like(p) for p in self.params]
        if self.stationary:
            log.info("gradient: 0 exactly (fidelity objective at its FP32 reference weights); no backward pass")
            with torch.no_grad(), eval_mode(self.model):
                for batch in self.local_batches:
                    total += self._loss(batch).double()
            (total,) = distributed.all_reduce_sum([total])
            return float(total) / len(self.batches), grads
        with eval_mode(self.model):
            for batch in progress(total=len(self.local_batches), desc="gradients", disable=not show_progress,
                                  iterable=self.local_batches):
                loss = self._loss(batch)
                parts = torch.autograd.grad(loss, self.params, allow_unused=True)
                self.gradient_passes += 1
                total += loss.detach().double()
                for acc, part in zip(grads, parts):
                    if part is not None:
                        acc += part.detach()
        total, *grads = distributed.all_reduce_sum([total, *grads])
        scale = 1.0 / len(self.batches)
        return float(total) * scale, [g * scale for g in grads]

    def _first_order_graphs(self) -> list[tuple[torch.Tensor, ...]]:
        if self._graphs is not None:
            return self._graphs
        from cetopt.curvature.progress import progress

        graphs = []
        for batch in progress(total=len(self.local_batches), desc="first-order graphs", iterable=self.local_batches):
            with second_order_attention():
                loss = self._loss(batch)
                grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            graphs.append(tuple(g if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params)))
        if self.cache_graph:
            self._graphs = graphs
        return graphs

    def hvp(self, vectors: Sequence[torch.Tensor], *, batched: bool = False) -> list[torch.Tensor]:
        """Hessian-vector products H v for v given per layer weight.

        Args:
            vectors: one tensor per layer, shaped like its weight, or with a leading batch dimension
                B when ``batched`` (B products in one backward pass where torch can vmap the model's
                backward; some ops, e.g. max-pooling on the CPU, cannot, and the B products then run
                one after another, with a warning logged once).

        Returns:
            H v per layer, same shapes as ``vectors``.
        """
        if batched and not self.vmap_ok:
            return self._looped(vectors)
        try:
            return self._hvp(vectors, batched=batched)
        except RuntimeError as err:
            if not batched or "vmap" not in str(err):
                raise
            self.vmap_ok = False
            log.warning("batched Hessian products are not supported by this model's ops (%s); "
                        "computing them one at a time", str(err).splitlines()[0][:120])
            return self._looped(vectors)

    def _looped(self, vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        rows = [self._hvp([v[b] for v in vectors]) for b in range(vectors[0].shape[0])]
        return [torch.stack([row[j] for row in rows]) for j in range(len(vectors))]

    def _hvp(self, vectors: Sequence[torch.Tensor], *, batched: bool = False) -> list[torch.Tensor]:
        with eval_mode(self.model):
            graphs = self._first_order_graphs()
            out = [torch.zeros_like(v) for v in vectors]
            for i, grads in enumerate(graphs):
                last = i == len(graphs) - 1
                needs_grad = [g.requires_grad for g in grads]
                parts = torch.autograd.grad(
                    [g for g, n in zip(grads, needs_grad) if n], self.params,
                    grad_outputs=[v for v, n in zip(vectors, needs_grad) if n],
                    retain_graph=self.cache_graph or not last, is_grads_batched=batched, allow_unused=True)
                for acc, part in zip(out, parts):
                    if part is not None:
                        acc += part.detach()
            if not self.cache_graph:
                self._graphs = None
        out = distributed.all_reduce_sum(out)
        self.hvp_count += vectors[0].shape[0] if batched else 1
        scale = 1.0 / len(self.batches)
        return [o * scale for o in out]

    def layer_hvp(self, vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Block-diagonal products H_ll v_l for every layer l.

        Args:
            vectors: one tensor per layer, shaped like its weight.

        Returns:
            H_ll v_l per layer.
        """
        blocks = self.layer_block_hvp({j: v.unsqueeze(0) for j, v in enumerate(vectors)})
        return [blocks[j][0] for j in range(len(vectors))]

    def layer_block_hvp(self, blocks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """H_ll V_l for several vectors per layer: ``blocks[l]`` is (p, *weight_shape), the answer too.

        Each product differentiates only layer l's gradient w.r.t. layer l's weight (one shared
        first-order graph), which costs a fraction of a full Hessian-vector product: the backward pass
        stops at W_l. benchmarks/curvature.py measures it.
        """
        return {j: self.cross_block_hvp(j, j, block) for j, block in blocks.items()}

    def cross_block_hvp(self, row: int, col: int, block: torch.Tensor) -> torch.Tensor:
        """H_(col,row) V for V of shape (p, *weight_shape of ``row``): the gradient of layer ``row``'s
        gradient w.r.t. layer ``col``'s weight along each vector (cross terms when row != col)."""
        with eval_mode(self.model):
            graphs = self._first_order_graphs()
            target = self.params[col]
            out = torch.zeros((block.shape[0], *target.shape), dtype=target.dtype, device=target.device)
            for grads in graphs:
                g = grads[row]
                if not g.requires_grad:
                    continue
                # batched (vmapped) backward only on CUDA: on the CPU it measured slower per vector than a
                # loop (benchmarks/curvature.py), and far slower for depthwise convolutions
                if block.shape[0] > 1 and self.vmap_ok and self.device.type == "cuda":
                    try:
                        (part,) = torch.autograd.grad(g, target, grad_outputs=block, retain_graph=True,
                                                      is_grads_batched=True, allow_unused=True)
                        if part is not None:
                            out += part.detach()
                        continue
                    except RuntimeError as err:
                        if "vmap" not in str(err):
                            raise
                        self.vmap_ok = False
                        log.warning("batched Hessian products are not supported by this model's ops; "
                                    "computing them one at a time")
                for i in range(block.shape[0]):
                    (part,) = torch.autograd.grad(g, target, grad_outputs=block[i], retain_graph=True,
                                                  allow_unused=True)
                    if part is not None:
                        out[i] += part.detach()
            if not self.cache_graph:
                self._graphs = None
        (out,) = distributed.all_reduce_sum([out])
        self.hvp_count += block.shape[0]
        return out / len(self.batches)

    def release(self) -> None:
        """Drop the cached first-order graphs (frees their memory)."""
        self._graphs = None


def check_finite(name: str, quantity: str, value: torch.Tensor) -> None:
    """Raise CurvatureError naming the layer and quantity if ``value`` holds NaN or inf."""
    if not bool(torch.isfinite(value).all()):
        raise CurvatureError(f"layer {name!r}: {quantity} contains NaN or inf; the loss is not twice "
                             "differentiable here, or the model diverged")

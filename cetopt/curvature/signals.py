"""Alternative curvature signals behind the same layer interface, so users can compare them with the
Hessian: the empirical Fisher diagonal (mean squared per-sample gradient) and the Gauss-Newton
matrix G = J' H_out J (always PSD where the output loss is convex), seen through products.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from cetopt import distributed
from cetopt.curvature.operator import Batch, CurvatureOperator, check_finite, eval_mode, second_order_attention
from cetopt.curvature.layers import weight_key
from cetopt.curvature.hutchinson import TraceEstimate, rademacher_like

SampleLoss = Callable[[nn.Module, Batch], torch.Tensor]


MEMORY_BUDGET_BYTES = 1 << 30  # per vmap call: per-sample activations and gradients of one chunk of samples


def chunk_for_memory(op: CurvatureOperator, budget_bytes: int = MEMORY_BUDGET_BYTES, most: int = 32) -> int:
    """Samples per vmap call such that a chunk's activations (kept for the backward) and per-sample gradients stay
    near ``budget_bytes``: one forward pass of a single sample counts the elements every module outputs. (Measured
    on MobileNetV2 at 224x224: 16 samples per call peaked at 3.0 GB, 32 were OOM-killed on a shared machine.)"""
    counted = [0]

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            counted[0] += output.numel()

    handles = [m.register_forward_hook(count) for m in op.model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), eval_mode(op.model):
            op.loss_fn(op.model, _slice(op.batches[0], 0, 1))
    finally:
        for h in handles:
            h.remove()
    element = next(iter(op.params)).element_size()
    per_sample = element * (3 * counted[0] + sum(p.numel() for p in op.params))  # forward + backward buffers
    return int(max(1, min(most, budget_bytes // max(per_sample, 1))))


def fisher_diagonal(operator: CurvatureOperator, *, per_sample_loss: SampleLoss | None = None,
                    chunk: int | None = None) -> list[torch.Tensor]:
    """Empirical Fisher diagonal per layer weight: mean over samples of (d loss_i / d W)^2.

    Each batch is split into single samples along dimension 0 of every tensor (a tuple/list/dict of
    tensors); per-sample gradients come from torch.func.vmap, ``chunk`` samples per call (None: about 1 GiB,
    :func:`chunk_for_memory`). ``per_sample_loss(model, sample)`` defaults to the operator's ``loss_fn`` applied
    to a batch of one.
    """
    loss_fn = per_sample_loss or operator.loss_fn
    names = operator.names
    model = operator.model
    weights = {weight_key(model, n): p.detach() for n, p in zip(names, operator.params)}
    others = {k: v.detach() for k, v in model.named_parameters() if k not in weights}
    buffers = dict(model.named_buffers())

    def sample_loss(w: dict[str, torch.Tensor], sample: Batch) -> torch.Tensor:
        return _call(model, {**others, **w}, buffers, loss_fn, _unsqueeze(sample))

    per_sample_grad = vmap(grad(sample_loss), in_dims=(None, 0))
    chunk = chunk or chunk_for_memory(operator)
    totals = {k: torch.zeros_like(v) for k, v in weights.items()}
    count = 0
    with eval_mode(model):
        for batch in operator.local_batches:  # this rank's share; the sums are all-reduced below
            size = _batch_size(batch)
            for start in range(0, size, chunk):
                part = _slice(batch, start, start + chunk)
                grads = per_sample_grad(weights, part)
                for key in totals:
                    totals[key] += (grads[key] ** 2).sum(dim=0)
                count += _batch_size(part)
    keys = [weight_key(model, n) for n in names]
    *summed, total = distributed.all_reduce_sum([totals[k] for k in keys] + [torch.tensor(float(count))])
    out = [t / float(total) for t in summed]
    for name, value in zip(names, out):
        check_finite(name, "Fisher diagonal", value)
    return out


class _Bound(nn.Module):
    """``fn(model, batch)`` as a module, so torch.func.functional_call can swap the model's tensors."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Batch], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.fn(self.model, batch)


def _call(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
          fn: Callable[[nn.Module, Batch], torch.Tensor], batch: Batch) -> torch.Tensor:
    tensors = {f"model.{k}": v for k, v in {**params, **buffers}.items()}
    return functional_call(_Bound(model, fn), tensors, (batch,))


def _batch_size(batch: Batch) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    return _batch_size(batch[0])


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, dict):
        return {k: _slice(v, start, stop) for k, v in batch.items()}
    return type(batch)(_slice(v, start, stop) for v in batch)


def _unsqueeze(sample: Batch) -> Batch:
    if isinstance(sample, torch.Tensor):
        return sample.unsqueeze(0)
    if isinstance(sample, dict):
        return {k: _unsqueeze(v) for k, v in sample.items()}
    return type(sample)(_unsqueeze(v) for v in sample)


def ggn_vector_product(operator: CurvatureOperator, vectors: list[torch.Tensor], *,
                       output_fn: Callable[[nn.Module, Batch], torch.Tensor],
                       output_loss: Callable[[torch.Tensor, Batch], torch.Tensor]) -> list[torch.Tensor]:
    """Gauss-Newton products G v = J' H_out J v, averaged over batches.

    Args:
        output_fn: ``output_fn(model, batch) -> outputs`` (e.g. logits).
        output_loss: ``output_loss(outputs, batch) -> scalar`` (e.g. cross-entropy with the labels);
            the full loss must equal output_loss(output_fn(model, batch), batch).
    """
    names = operator.names
    model = operator.model
    keys = [weight_key(model, n) for n in names]
    weights = {k: p.detach() for k, p in zip(keys, operator.params)}
    others = {k: v.detach() for k, v in model.named_parameters() if k not in weights}
    buffers = dict(model.named_buffers())
    tangent = {k: v for k, v in zip(keys, vectors)}
    out = {k: torch.zeros_like(v) for k, v in weights.items()}
    with eval_mode(model):
        for batch in operator.local_batches:  # this rank's share; the sums are all-reduced below
            def outputs(w: dict[str, torch.Tensor], batch: Batch = batch) -> torch.Tensor:
                return _call(model, {**others, **w}, buffers, output_fn, batch)

            with second_order_attention():  # forward mode through attention: the math kernel has it
                y, jv = jvp(outputs, (weights,), (tangent,))
            y = y.detach().requires_grad_(True)
            (g_out,) = torch.autograd.grad(output_loss(y, batch), y, create_graph=True)
            (h_jv,) = torch.autograd.grad(g_out, y, grad_outputs=jv)
            _, pullback = vjp(outputs, weights)
            (jt,) = pullback(h_jv)
            for k in out:
                out[k] += jt[k].detach()
    scale = 1.0 / len(operator.batches)
    return [t * scale for t in distributed.all_reduce_sum([out[k] for k in keys])]


def ggn_traces(operator: CurvatureOperator, *, output_fn: Callable[[nn.Module, Batch], torch.Tensor],
               output_loss: Callable[[torch.Tensor, Batch], torch.Tensor], probes: int = 32,
               seed: int = 0) -> list[TraceEstimate]:
    """Hutchinson traces of the Gauss-Newton blocks (layer-restricted probes, one product per probe)."""
    import numpy as np

    generator = torch.Generator().manual_seed(seed)
    samples: list[list[float]] = [[] for _ in operator.params]
    for _ in range(probes):
        vs = [p[0] for p in rademacher_like(operator.params, 1, generator)]
        gv = ggn_vector_product(operator, vs, output_fn=output_fn, output_loss=output_loss)
        for j, (v, g) in enumerate(zip(vs, gv)):
            samples[j].append(float((v * g).sum()))
    return [TraceEstimate(float(np.mean(s)), float(np.std(s, ddof=1) / np.sqrt(len(s))), len(s)) for s in samples]

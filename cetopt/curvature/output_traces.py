"""Per-layer Hessian traces from probes in the model's output space, for piecewise-linear models.

Where every quantisable layer is called once with an output affine in its weight (Linear, Conv and subclasses
that pass the numerical check, cetopt.curvature.leaves) and the model is piecewise linear from each layer's
output on (ReLU networks with eval-mode BatchNorm, pooling and skips: the check of cetopt.curvature.prefix), a
layer's Hessian block is exactly H_ll = J_l' H_o J_l, with J_l the Jacobian of the
model output o in the layer's weight and H_o the Hessian of the loss in o (a ReLU's second derivative is 0,
as autograd also takes it). For a probe v in output space with E[v v'] = I,

    E[ (J_l' v) . (J_l' H_o v) ] = tr(J_l' H_o J_l) = tr(H_ll)

and both vectors come from two backward passes of the batch that serve *every* layer at once: the probe
costs two backwards, like one weight-space probe, yet each layer's sample involves only its own block,
without the other layers' cross-terms that make shared weight-space probes noisy (the variance of a
restricted, per-layer probe at the price of a shared one). H_o v is a product on the outputs alone.
Where the loss is softmax cross-entropy in the outputs (checked numerically, :func:`softmax_ce_scale`), the
probe is instead u = onehot(y) - p with labels y drawn from the model (E[u u'] = H_o up to scale): one
backward per probe and non-negative samples s ||J_l' u||^2 with a far smaller variance.
Speed and variance against the other modes: benchmarks/curvature.py.

Not exact (so not used) for other models: attention, GELU, LayerNorm or gates add curvature that J' H_o J
lacks. :func:`output_space_traces` returns None there. Under torch.distributed each rank runs its share of the
batches and every probe's per-layer sums are all-reduced.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from cetopt import distributed
from cetopt.curvature.hutchinson import TraceEstimate, add_probe, finished
from cetopt.curvature.operator import CurvatureOperator, eval_mode
from cetopt.curvature.progress import progress

log = logging.getLogger(__name__)


class _Capture(torch.nn.Module):
    """Runs the model inside ``loss_fn`` and keeps its output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.outputs = model, []  # type: ignore[var-annotated]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.model(*args, **kwargs)
        self.outputs.append(out)
        return out


def exactness_problem(operator: CurvatureOperator) -> str | None:
    """Why the output-space estimator would not give the Hessian traces of ``operator`` (None: it does): the
    model does not trace, or some layer is called other than once, has an output not affine in its weight, or
    a downstream node that is not piecewise linear (cetopt.curvature.prefix.PrefixRunner.forward_problem)."""
    from cetopt.curvature.prefix import make_prefix_runner

    if operator.stationary:  # fidelity objective at its reference: H = J' H_o J exactly, for any architecture
        capture = _Capture(operator.model)
        with torch.no_grad(), eval_mode(operator.model):
            operator.loss_fn(capture, operator.batches[0])
        if len(capture.outputs) != 1 or not isinstance(capture.outputs[0], torch.Tensor):
            return "the model output is not one tensor"
        return None
    runner, reason = make_prefix_runner(operator.model, operator.loss_fn, operator.names)
    if runner is None:
        return str(reason)
    with eval_mode(operator.model):
        if not runner.record(operator.model, operator.batches[0]):  # the same batch on every rank: one decision
            return f"prefix caching is off: {runner.failure}"
        try:
            for name in operator.names:
                if not runner.supports(name):
                    return f"layer {name} is not a module call in the traced graph"
                problem = runner.forward_problem(name)
                if problem is not None:
                    return f"downstream of {name}: {problem}" if "piecewise" in problem else problem
        finally:
            runner.release()
    return None


def output_space_traces(operator: CurvatureOperator, *, max_probes: int = 128, min_probes: int = 16,
                        rtol: float = 0.05, seed: int = 0, show_progress: bool = True,
                        check: bool = True) -> list[TraceEstimate] | None:
    """Per-layer traces of the mean calibration loss's Hessian, one TraceEstimate per layer, or None (debug log)
    where :func:`exactness_problem` finds the estimator inexact.

    A probe draws one output vector per batch (Rademacher, or model-drawn labels for softmax cross-entropy); its
    sample of layer l is the mean over batches of (J_l' v) . (J_l' H_o v). Probes stop once every layer's standard error / |trace| < ``rtol`` (after
    ``min_probes``), or at ``max_probes`` with a warning naming the layers (as hutchinson_traces does).
    Each batch's graph is kept for the whole run: memory grows with the number of calibration batches.
    ``check=False`` skips :func:`exactness_problem` (a trace and a forward pass) for a caller that has just run it.
    """
    problem = exactness_problem(operator) if check else None
    if problem is not None:
        log.debug("output-space traces off: %s", problem)
        return None
    params = operator.params
    graphs = []
    with eval_mode(operator.model):
        # batch i draws its probes from its own stream (seed, i): any split of the batches among torch.distributed
        # ranks sums the very same samples as one process
        for i in distributed.shard_indices(len(operator.batches)):
            batch = operator.batches[i]
            generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
            capture = _Capture(operator.model)
            loss = operator.loss_fn(capture, batch)
            (out,) = capture.outputs
            if not isinstance(out, torch.Tensor) or not torch.is_floating_point(out):
                log.debug("output-space traces off: the model output is not one floating-point tensor")
                return None
            (g_out,) = torch.autograd.grad(loss, out, create_graph=True)
            graphs.append((out, g_out, softmax_ce_scale(out, g_out, generator), generator))
    samples: list[list[float]] = [[] for _ in params]
    bar = progress(total=max_probes, desc="hutchinson (output space)", disable=not show_progress)
    try:
        for done in range(1, max_probes + 1):
            totals = [0.0] * len(params)
            for out, g_out, scale, generator in graphs:
                for j, value in enumerate(_probe_sample(params, out, g_out, scale, generator)):
                    totals[j] += value
            (summed,) = distributed.all_reduce_sum([torch.tensor(totals, dtype=torch.float64)])
            stop = add_probe(operator.names, samples, list(summed / len(operator.batches)), "output-space trace probe",
                             done=done, min_probes=min_probes, rtol=rtol)
            bar.update(1)
            if stop:
                break
    finally:
        bar.close()
    return finished(operator.names, samples, rtol=rtol, max_probes=max_probes)


def _probe_sample(params: Sequence[torch.Tensor], out: torch.Tensor, g_out: torch.Tensor, scale: float | None,
                  generator: torch.Generator) -> list[float]:
    """One probe's sample on one batch, per layer: (J_l' v) . (J_l' H_o v) for a Rademacher v, or for softmax
    cross-entropy (``scale`` set) s ||J_l' u||^2 with u a label drawn from the model less its probabilities."""
    totals = [0.0] * len(params)
    if scale is not None:
        p = torch.softmax(out.detach(), dim=-1).reshape(-1, out.shape[-1])
        drawn = torch.multinomial(p.cpu().double(), 1, generator=generator).reshape(-1).to(p.device)
        u = (torch.nn.functional.one_hot(drawn, out.shape[-1]).to(p) - p).reshape(out.shape)
        a = torch.autograd.grad(out, params, grad_outputs=u, retain_graph=True, allow_unused=True)
        for j, aj in enumerate(a):
            if aj is not None:
                totals[j] += scale * float((aj * aj).sum())
        return totals
    v = (torch.randint(0, 2, out.shape, generator=generator) * 2 - 1).to(out)
    (hv,) = torch.autograd.grad(g_out, out, grad_outputs=v, retain_graph=True) \
        if g_out.requires_grad else (torch.zeros_like(out),)
    a = torch.autograd.grad(out, params, grad_outputs=v, retain_graph=True, allow_unused=True)
    b = torch.autograd.grad(out, params, grad_outputs=hv, retain_graph=True, allow_unused=True)
    for j, (aj, bj) in enumerate(zip(a, b)):
        if aj is not None and bj is not None:
            totals[j] += float((aj * bj).sum())
    return totals


def softmax_ce_scale(out: torch.Tensor, g_out: torch.Tensor, generator: torch.Generator) -> float | None:
    """s when the loss's Hessian in the output ``out`` (.., C) is s x (diag(p) - p p') per row, p = softmax(out)
    (softmax cross-entropy, any labels, mean or sum reduction), checked on two random vectors to 1e-4; None
    otherwise. There u = onehot(y) - p with y drawn from p has E[u u'] = diag(p) - p p', so s ||J_l' u||^2 is a
    non-negative sample of tr(H_ll) whose variance is far below the general (J_l' v) . (J_l' H_o v)."""
    if out.dim() < 1 or not g_out.requires_grad:
        return None
    p = torch.softmax(out.detach(), dim=-1)
    scale = None
    for _ in range(2):
        v = torch.randn(out.shape, generator=generator).to(out)
        (hv,) = torch.autograd.grad(g_out, out, grad_outputs=v, retain_graph=True)
        model_hv = p * v - p * (p * v).sum(dim=-1, keepdim=True)
        norm = float((model_hv * model_hv).sum())
        if norm == 0.0:
            return None
        fitted = float((hv * model_hv).sum()) / norm
        scale = fitted if scale is None else scale
        if float((hv - scale * model_hv).norm()) > 1e-4 * float(hv.norm()) or not fitted > 0:
            return None
    return scale


"""Curvature + quantiser -> AllocationProblem.

For every quantisable layer l and candidate bit-width b the error is d = Q_b(W_l) - W_l, and the
choice's predicted loss change is

- ``cet``:      g_l . d + 1/2 d' H_ll d        (the second-order expansion; the quadratic form is exact,
                                                 from Hessian-vector products, not a trace surrogate)
- ``hawq-v3``:  (Tr H_ll / n_l) * ||d||^2        (HAWQ-V3's sensitivity, traces by Hutchinson)

Each switch of the fuller CET reconstruction (eigenbasis projections, lossless neighbourhoods, major-axis
rounding) builds on these; see docs. The problem records its provenance in ``metadata``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cetopt.curvature.extract import CurvatureSettings
from cetopt.curvature.hutchinson import hutchinson_traces
from cetopt.curvature.operator import Batch, CurvatureOperator, LossFn
from cetopt.curvature.quadratic import quadratic_forms
from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, Layer
from cetopt.quant.quantizers import QuantizerSpec, quantization_error

log = logging.getLogger(__name__)

METHODS = ("cet", "hawq-v3")


def _macs(model: nn.Module, layers: list[str], batch: Batch, loss_fn: LossFn) -> dict[str, int]:
    """Multiply-accumulates per sample of each Linear/Conv layer, from one traced forward pass."""
    modules = dict(model.named_modules())
    macs: dict[str, int] = {}
    hooks = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            per_out = module.weight[0].numel()  # in_features (x kernel area) per output element
            macs[name] = int(output[0].numel() * per_out) if output.dim() > 1 else int(output.numel() * per_out)
        return record

    for name in layers:
        hooks.append(modules[name].register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            loss_fn(model, batch)
    finally:
        for h in hooks:
            h.remove()
    return macs


def build_problem(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *, name: str,
                  bits: Sequence[int] = (2, 3, 4, 6, 8), method: str = "cet", budget: Budget | None = None,
                  quantizer: QuantizerSpec = QuantizerSpec(), layers: Sequence[str] | None = None,
                  settings: CurvatureSettings | None = None, metadata: dict | None = None,
                  tie_residuals: bool = True) -> AllocationProblem:
    """Extract curvature from ``model`` on ``batches`` and build the allocation problem.

    Args:
        name: problem name.
        bits: candidate bit-widths per layer.
        method: "cet" (exact second-order change) or "hawq-v3" (trace x ||d||^2).
        budget: the budget (default: 4 average bits).
        quantizer: how Q_b is computed.
        layers: restrict to these module names (default: every Linear/Conv).
        settings: curvature settings (device, dtype, probes for hawq-v3 traces, seed).
        tie_residuals: layers whose outputs are summed (traced with torch.fx) share a bit-width.
    """
    if method not in METHODS:
        raise ProblemError(f"unknown method {method!r}; use one of {METHODS}", field="method")
    settings = settings or CurvatureSettings()
    op = CurvatureOperator(model, loss_fn, batches, layers=layers, device=settings.device,
                           dtype=settings.torch_dtype())
    loss, gradient = op.loss_and_gradient()
    errors = {n: [quantization_error(p.detach(), b, quantizer) for b in bits] for n, p in zip(op.names, op.params)}
    per_layer: dict[str, np.ndarray] = {}
    extra: dict[str, object] = {}
    if method == "cet":
        forms = quadratic_forms(op, errors, gradient=gradient)
        for n in op.names:
            per_layer[n] = forms.linear[n] + 0.5 * forms.own[n]
    else:
        traces = hutchinson_traces(op, max_probes=settings.max_probes, min_probes=settings.min_probes,
                                   block=settings.probe_block, rtol=settings.rtol, seed=settings.seed,
                                   show_progress=False)
        for (n, p), t in zip(zip(op.names, op.params), traces):
            norms = np.array([float((e ** 2).sum()) for e in errors[n]])
            per_layer[n] = t.trace / p.numel() * norms
        extra["traces"] = {n: [t.trace, t.stderr, t.n_probes] for n, t in zip(op.names, traces)}
    macs = _macs(op.model, op.names, op.batches[0], loss_fn)
    problem_layers = tuple(
        Layer(name=n, params=int(p.numel()), macs=macs.get(n),
              shape=(int(p.shape[0]), int(p[0].numel())),
              choices=tuple(Choice(bits=int(b), loss=float(v)) for b, v in zip(bits, per_layer[n])))
        for n, p in zip(op.names, op.params))
    try:
        from cetopt.zoo.graph import traced_edges

        edges = traced_edges(model, op.names)
        graph_note = "traced with torch.fx"
    except Exception as err:  # fx cannot trace data-dependent control flow: say so, use the layer order
        log.warning("torch.fx could not trace %s (%s); using the sequential layer order, no residual ties",
                    name, type(err).__name__)
        edges = tuple(Edge(a, b) for a, b in zip(op.names[:-1], op.names[1:]))
        graph_note = f"sequential order of the quantisable layers (torch.fx could not trace: {type(err).__name__})"
    info = {"method": method, "bits": list(bits), "quantizer": quantizer.to_dict(), "curvature": asdict(settings),
            "calibration_loss": loss, "calibration_batches": len(op.batches), "device": str(op.device),
            "layer_graph": graph_note, **extra, **(metadata or {})}
    problem = AllocationProblem(name=name, layers=problem_layers, budget=budget or Budget(avg_bits=4.0),
                                edges=edges, metadata=info)
    if tie_residuals:
        from cetopt.problem.graph import layer_graph, tie_groups

        problem = problem.with_changes(ties=tuple(tie_groups(layer_graph(problem))))
    return problem

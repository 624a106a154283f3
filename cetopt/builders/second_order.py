"""Curvature + candidates -> AllocationProblem.

For every quantisable layer l and candidate c (a bit-width, rounded to nearest or toward the major axes)
the error is d = W_hat - W, and the choice's predicted loss change comes from a cost model
(cetopt.builders.costs): CET with each ingredient a switch, LLC's lossless neighbourhood, or HAWQ-V3's
trace x |d|^2. Optional constraints and terms from the geometry:

- ``layer_eps``: CET's error subspace E_l(eps) = {d : dL_l(d) <= eps}; candidates outside are removed.
- ``interactions``: cross-layer terms d_a' H_ab d_b for adjacent layers (the layer graph's producer /
  consumer and shared-input pairs), exact from Hessian-vector products, as pairwise interaction terms.
- LLC: candidates with |d| beyond the lossless radius 2|g.d^|/lambda_max (or with g.d >= 0) are removed,
  the signed cost is kept, and the size is minimised subject to the predicted change <= ``max_loss``.

The problem records its provenance in ``metadata``; :class:`BuiltProblem` also keeps each choice's
compressed weight, so a solved plan can be applied exactly as it was scored.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.builders.candidates import Levels, level_candidates, quantization_candidates
from cetopt.builders.costs import cost_model, predicted_change
from cetopt.curvature.extract import CurvatureSettings, extract_curvature
from cetopt.curvature.operator import Batch, CurvatureOperator, LossFn
from cetopt.curvature.quadratic import quadratic_forms
from cetopt.curvature.result import CurvatureResult
from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, Interaction, Layer, Minimize
from cetopt.quant.quantizers import QuantizerSpec

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class BuiltProblem:
    """An allocation problem and what it was built from.

    Attributes:
        problem: the problem (choices in the order of ``weights``).
        weights: layer -> the compressed weight of each of its choices.
        curvature: the curvature result used (None when only exact quadratic forms were needed).
    """

    problem: AllocationProblem
    weights: Mapping[str, tuple[torch.Tensor, ...]]
    curvature: CurvatureResult | None = None

    def compressed_weights(self, bits: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Layer -> compressed weight of the choice with the planned bit-width (plain quantisation)."""
        from cetopt.problem.evaluate import choices_from_bits

        return self.weights_for_choices(choices_from_bits(self.problem, bits))

    def weights_for_choices(self, choices: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Layer -> compressed weight of a choice index (any level: bits, rank, terms)."""
        return {layer.name: self.weights[layer.name][choices[layer.name]] for layer in self.problem.layers}

    def apply(self, model: nn.Module, bits: Mapping[str, int]) -> nn.Module:
        """A copy of ``model`` with each layer's weight replaced by its planned compressed weight."""
        return replace_weights(model, self.compressed_weights(bits))


def replace_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose named layers' weights are ``weights`` (layer name -> tensor)."""
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    for name, weight in weights.items():
        if name not in modules or not hasattr(modules[name], "weight"):
            raise ProblemError(f"the model has no layer {name!r} with a weight", field="layers")
        target = modules[name].weight
        target.data.copy_(weight.to(device=target.device, dtype=target.dtype))
    return out


def _edges(model: nn.Module, names: list[str], label: str) -> tuple[tuple[Edge, ...], str]:
    try:
        from cetopt.zoo.graph import traced_edges

        return traced_edges(model, names), "traced with torch.fx"
    except Exception as err:  # fx cannot trace data-dependent control flow: say so, use the layer order
        log.warning("torch.fx could not trace %s (%s); using the sequential layer order, no residual ties",
                    label, type(err).__name__)
        edges = tuple(Edge(a, b) for a, b in zip(names[:-1], names[1:]))
        return edges, f"sequential order of the quantisable layers (torch.fx could not trace: {type(err).__name__})"


def build(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *, name: str,
          bits: Sequence[int] = (2, 3, 4, 6, 8), method: str = "cet", budget: Budget | None = None,
          quantizer: QuantizerSpec = QuantizerSpec(), rounding: str = "nearest", layers: Sequence[str] | None = None,
          settings: CurvatureSettings | None = None, curvature: CurvatureResult | None = None,
          interactions: bool = False, layer_eps: float | None = None, max_loss: float = 0.0,
          llc_radius: str = "directional", levels: Levels | None = None, metadata: dict | None = None, tie_residuals: bool = True,
          cache_dir: str | None | bool = None) -> BuiltProblem:
    """Build the allocation problem of ``model`` on calibration ``batches``.

    Args:
        name: problem name.
        bits: candidate bit-widths per layer.
        method: a cost model of cetopt.builders.costs (cet, cet-eigen, cet-trace, cet-nograd, llc, hawq-v3).
        budget: the budget (default: 4 average bits; LLC: predicted change <= ``max_loss``). A budget that
            only bounds the predicted loss (``Budget(max_loss=eps)``) gives the size-minimising form.
        quantizer: the grid of Q_b.
        rounding: "nearest", "major-axis" (error pushed toward each layer's flat axes) or
            "major-axis-gradient" (also using g.d).
        layers: restrict to these module names (default: every Linear/Conv).
        settings: curvature settings (traces, Lanczos k, device, dtype, seed).
        curvature: a precomputed CurvatureResult of these layers (else extracted, and cached on disk).
        interactions: add exact cross-layer terms d_a' H_ab d_b for adjacent layers.
        layer_eps: keep only candidates inside E_l(eps) (the best candidate if none is).
        max_loss: LLC's bound on the total predicted change (0: lossless).
        levels: compression levels beyond plain bit-widths (low-rank ranks, series terms); overrides ``bits``.
        llc_radius: "directional" (radius along each candidate's own error, curvature d'Hd/|d|^2) or
            "lambda-max" (the conservative ball, curvature lambda_max).
        tie_residuals: layers whose outputs are summed (traced with torch.fx) share a bit-width.
        cache_dir: curvature cache (None: default; False: none).
    """
    costs_model = cost_model(method)
    if llc_radius not in ("directional", "lambda-max"):
        raise ProblemError(f"llc_radius must be 'directional' or 'lambda-max', got {llc_radius!r}", field="llc_radius")
    settings = settings or CurvatureSettings()
    op = CurvatureOperator(model, loss_fn, batches, layers=layers, device=settings.device,
                           dtype=settings.torch_dtype())
    loss, gradient = op.loss_and_gradient()
    quadrics: dict[str, LayerQuadric] | None = None
    if costs_model.needs_spectrum or rounding != "nearest":
        if curvature is None:
            needs_eig = costs_model.curvature == "eigen" or costs_model.lossless or rounding != "nearest"
            extract_settings = settings if needs_eig else dataclasses.replace(settings, k=0)
            curvature = extract_curvature(model, loss_fn, batches, settings=extract_settings, layers=op.names,
                                          cache_dir=cache_dir, show_progress=False, description=name)
        missing = [n for n in op.names if n not in curvature.names]
        if missing:
            raise ProblemError(f"the curvature result lacks layers {missing[:3]}", field="curvature")
        if costs_model.curvature == "eigen" or costs_model.lossless or rounding != "nearest":
            quadrics = {n: LayerQuadric.from_curvature(curvature.layer(n)) for n in op.names}
    weights = {n: p.detach() for n, p in zip(op.names, op.params)}
    if levels is None:
        candidates = quantization_candidates(weights, bits, quantizer=quantizer, rounding=rounding, quadrics=quadrics)
    else:
        candidates = level_candidates(weights, levels, quantizer=quantizer, rounding=rounding, quadrics=quadrics)
    errors = {c.name: c.errors() for c in candidates}
    edges, graph_note = _edges(model, op.names, name)
    from cetopt.problem.graph import adjacent_pairs, layer_graph, tie_groups

    skeleton = AllocationProblem(name=name, layers=tuple(
        Layer(name=n, params=int(p.numel()), choices=(Choice(bits=8, loss=0.0),)) for n, p in zip(op.names, op.params)),
        budget=Budget(avg_bits=8.0), edges=edges)
    graph = layer_graph(skeleton)
    ties = [tuple(t) for t in tie_groups(graph)] if tie_residuals else []
    pairs = adjacent_pairs(graph) if interactions else []
    forms = quadratic_forms(op, errors, gradient=gradient, pairs=pairs) if (
        costs_model.needs_quadratic_forms or costs_model.lossless or pairs) else None
    grads = {n: g.detach().double().cpu().numpy().ravel() for n, g in zip(op.names, gradient)}
    macs = _macs(op.model, op.names, op.batches[0], loss_fn)
    admissible: dict[str, set[int]] = {}
    fallback_bits: dict[str, int] = {}
    scored: dict[str, np.ndarray] = {}
    for cand in candidates:
        flat = [e.detach().double().cpu().numpy().ravel() for e in errors[cand.name]]
        linear = np.array([grads[cand.name] @ d for d in flat])
        energy = np.array([d @ d for d in flat])
        quadric = quadrics[cand.name] if quadrics else None
        eigen = np.array([quadric.quadratic(d) for d in flat]) if quadric is not None else None
        trace_n = curvature.layer(cand.name).mean_eigenvalue if curvature is not None else float("nan")
        costs = predicted_change(costs_model, linear=linear, energy=energy, exact=forms.own[cand.name] if forms else None,
                                 eigen=eigen, trace_per_weight=trace_n)
        fallback = int(np.argmax([c.bits * c.terms if c.rank is None else -1 for c in cand.choices]))
        keep = np.ones(len(costs), dtype=bool)
        if costs_model.lossless:
            directional = forms.own[cand.name] / np.maximum(energy, 1e-300) if (
                forms is not None and llc_radius == "directional") else [None] * len(flat)
            radius = np.array([quadric.lossless_radius(d, k) for d, k in zip(flat, directional)])
            keep &= np.sqrt(energy) <= radius
        if layer_eps is not None:
            keep &= costs <= layer_eps
            fallback = int(np.argmin(costs))
        admissible[cand.name] = {cand.choices[i].level for i in np.flatnonzero(keep)}
        fallback_bits[cand.name] = cand.choices[fallback].level
        scored[cand.name] = costs
    by_name = {c.name: c for c in candidates}
    for tie in ties:  # tied layers share a bit-width: keep the bit-widths every member admits
        common = set.intersection(*({level[0] for level in admissible[n]} for n in tie))
        if not common:  # none shared: the fallback bit-width (most precise; least costly under layer_eps)
            pick = (min if layer_eps is not None else max)(fallback_bits[n][0] for n in tie)
            common = {pick}
            for n in tie:
                admissible[n] = admissible[n] | {c.level for c in by_name[n].choices if c.bits == pick}
        for n in tie:
            admissible[n] = {level for level in admissible[n] if level[0] in common}
    problem_layers, kept, removed = [], {}, {}
    for cand in candidates:
        costs = scored[cand.name]
        allowed = admissible[cand.name] or {fallback_bits[cand.name]}
        idx = np.array([i for i, c in enumerate(cand.choices) if c.level in allowed])
        kept[cand.name] = idx
        if idx.size < len(costs):
            removed[cand.name] = [c.label for c in cand.choices if c.level not in allowed]
        p = weights[cand.name]
        problem_layers.append(Layer(
            name=cand.name, params=int(p.numel()), macs=macs.get(cand.name), shape=(int(p.shape[0]), int(p[0].numel())),
            choices=tuple(Choice(bits=cand.choices[i].bits, loss=float(costs[i]), rank=cand.choices[i].rank,
                                 terms=cand.choices[i].terms, size_bits=cand.choices[i].size_bits) for i in idx)))
    terms = []
    if forms is not None:
        for (a, b), matrix in forms.cross.items():
            sub = matrix[np.ix_(kept[a], kept[b])]
            terms.append(Interaction(a=a, b=b, loss=tuple(tuple(float(v) for v in row) for row in sub)))
    info = {"method": method, "cost_model": asdict(costs_model), "rounding": rounding, "bits": list(bits),
            **({"levels": levels.to_dict()} if levels is not None else {}),
            "quantizer": quantizer.to_dict(), "curvature": asdict(settings), "calibration_loss": loss,
            "calibration_batches": len(op.batches), "device": str(op.device), "layer_graph": graph_note,
            "interactions": len(terms), **({"llc_radius": llc_radius} if costs_model.lossless else {}), **({"layer_eps": layer_eps} if layer_eps is not None else {}),
            **({"removed_candidates": removed} if removed else {}), **(metadata or {})}
    if method == "hawq-v3" and curvature is not None:
        info["traces"] = {l.name: [l.trace, l.trace_stderr, l.n_probes] for l in curvature.layers if l.name in weights}
    if costs_model.lossless and budget is None:
        budget = Budget(max_loss=max_loss)
    # a budget on the predicted loss alone is the "maximise compression" form: minimise the size under it
    loss_only = budget is not None and budget.max_loss is not None and budget.bops is None and \
        budget.max_size_bits(sum(int(w.numel()) for w in weights.values())) is None
    minimize = Minimize.SIZE if loss_only else Minimize.LOSS
    problem = AllocationProblem(name=name, layers=tuple(problem_layers), budget=budget or Budget(avg_bits=4.0),
                                edges=edges, interactions=tuple(terms), minimize=minimize, metadata=info)
    if ties:
        problem = problem.with_changes(ties=tuple(ties))
    chosen = {c.name: tuple(c.weights[i] for i in kept[c.name]) for c in candidates}
    return BuiltProblem(problem=problem, weights=chosen, curvature=curvature)


def build_problem(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], **kwargs: object) -> AllocationProblem:
    """:func:`build`'s problem alone (same arguments)."""
    return build(model, loss_fn, batches, **kwargs).problem  # type: ignore[arg-type]

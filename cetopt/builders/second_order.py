"""Curvature + candidates -> AllocationProblem.

For every quantisable layer l and candidate c (a bit-width, rounded to nearest or toward the major axes)
the error is d = W_hat - W, and the choice's predicted loss change comes from a registered cost model
(cetopt.costmodels): CET with each ingredient a switch, LLC's lossless neighbourhood, HAWQ-V3's
trace x |d|^2, the Fisher diagonal, ... Optional constraints and terms from the geometry:

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
import logging
from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.builders.assemble import (interaction_terms, layer_edges, layer_macs, problem_form, problem_layers,
                                     problem_metadata)
from cetopt.builders.candidates import LayerCandidates, Levels, level_candidates, quantization_candidates
from cetopt.builders.filters import select_candidates
from cetopt.builders.signals import SignalInputs, collect_signals, curvature_for
from cetopt.costmodels.dominance import signal_effects
from cetopt.costmodels.registry import get_cost_model
from cetopt.curvature.extract import CurvatureSettings
from cetopt.curvature.operator import Batch, CurvatureOperator, LossFn
from cetopt.curvature.result import CurvatureResult
from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, Layer
from cetopt.quant.quantizers import QuantizerSpec

log = logging.getLogger(__name__)


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
    from cetopt.curvature.layers import layer_weight

    for name, weight in weights.items():
        target = layer_weight(out, name)  # a module's weight or a bare Parameter; ProblemError when absent
        target.data.copy_(weight.to(device=target.device, dtype=target.dtype))
    return out


def _candidates(weights: Mapping[str, torch.Tensor], bits: Sequence[int], levels: Levels | None,
                quantizer: QuantizerSpec, rounding: str | tuple[str, ...], quadrics: Mapping[str, LayerQuadric] | None,
                grams: Mapping[str, torch.Tensor] | None, group_sizes: Sequence[int] | None) -> list[LayerCandidates]:
    if levels is None:
        return quantization_candidates(weights, bits, quantizer=quantizer, rounding=rounding, quadrics=quadrics,
                                       grams=grams, group_sizes=group_sizes)
    if group_sizes is not None:
        raise ProblemError("group sizes as candidates apply to plain bit-widths, not to levels", field="group_sizes")
    return level_candidates(weights, levels, quantizer=quantizer, rounding=rounding, quadrics=quadrics, grams=grams)


def rounding_grams(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], names: Sequence[str],
                   rounding: str | Sequence[str]) -> dict[str, torch.Tensor] | None:
    """Layer-input Gram matrices (cetopt.quant.adaround.layer_grams over every calibration batch) when a rounding
    needs them, else None. ``cetopt.artifact`` calls the same function, so apply rounds on the same matrices."""
    from cetopt.quant.adaround import layer_grams
    from cetopt.quant.rounding import rounding_needs
    from cetopt.quant.rounding.base import GRAM

    names_r = (rounding,) if isinstance(rounding, str) else tuple(rounding)
    if not any(GRAM in rounding_needs(r) for r in names_r):
        return None
    return layer_grams(model, list(names), loss_fn, list(batches))


def _ties_and_pairs(op: CurvatureOperator, name: str, tie_residuals: bool, interactions: bool
                    ) -> tuple[tuple[Edge, ...], str, list[tuple[str, ...]], list[tuple[str, str]]]:
    from cetopt.problem.graph import adjacent_pairs, layer_graph, tie_groups

    edges, note = layer_edges(op.model, op.names, name)
    skeleton = AllocationProblem(name=name, layers=tuple(
        Layer(name=n, params=int(p.numel()), choices=(Choice(bits=8, loss=0.0),)) for n, p in zip(op.names, op.params)),
        budget=Budget(avg_bits=8.0), edges=edges)
    graph = layer_graph(skeleton)
    ties = [tuple(t) for t in tie_groups(graph)] if tie_residuals else []
    return edges, note, ties, (adjacent_pairs(graph) if interactions else [])


def build(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *, name: str,
          bits: Sequence[int] = (2, 3, 4, 6, 8), method: str = "cet", budget: Budget | None = None,
          quantizer: QuantizerSpec = QuantizerSpec(), rounding: str | Sequence[str] = "nearest",
          group_sizes: Sequence[int] | None = None, layers: Sequence[str] | None = None,
          settings: CurvatureSettings | None = None, curvature: CurvatureResult | None = None,
          interactions: bool = False, layer_eps: float | None = None, max_loss: float = 0.0,
          llc_radius: str = "directional", levels: Levels | None = None, metadata: dict | None = None,
          tie_residuals: bool = True, cache_dir: str | None | bool = None,
          validation: Sequence[Batch] = (), forms_cache: MutableMapping[str, Any] | None = None) -> BuiltProblem:
    """Build the allocation problem of ``model`` on calibration ``batches``: make candidates, collect the
    signals the cost model needs, score, filter, assemble.

    Args:
        name: problem name.
        bits: candidate bit-widths per layer.
        method: a registered cost model (cetopt.costmodels: cet, cet-eigen, cet-trace, cet-nograd, llc, hawq-v3,
            fisher, ...).
        budget: the budget (default: 4 average bits; LLC: predicted change <= ``max_loss``). A budget that
            only bounds the predicted loss (``Budget(max_loss=eps)``) gives the size-minimising form.
        quantizer: the grid of Q_b.
        rounding: a registered rounding (cetopt.quant.rounding: nearest, mse, major-axis, major-axis-gradient,
            adaround, gptq), or several: each (bits, rounding) is then a candidate of its own, priced after its
            rounding (joint allocation).
        group_sizes: scale layouts offered as candidates (0 = per channel, g = a scale per g inputs), each
            priced with its packed size (codes + scales); None: the quantiser's layout alone.
        layers: restrict to these module names (default: every Linear/Conv/Embedding).
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
        validation: held-out batches, disjoint from ``batches``, for cost models that check their estimate on
            another split (the ``linear_holdout`` signal of cet-holdout).
        forms_cache: quadratic forms computed by earlier builds on this same model and calibration data
            (cetopt.builders.signals.SignalInputs.forms_cache); None computes them afresh.
    """
    costs_model = get_cost_model(method)
    if not isinstance(rounding, str):
        rounding = tuple(rounding) if len(tuple(rounding)) != 1 else tuple(rounding)[0]
    if llc_radius not in ("directional", "lambda-max"):
        raise ProblemError(f"llc_radius must be 'directional' or 'lambda-max', got {llc_radius!r}", field="llc_radius")
    settings = settings or CurvatureSettings()
    op = CurvatureOperator(model, loss_fn, batches, layers=layers, device=settings.device, dtype=settings.torch_dtype())
    loss, gradient = op.loss_and_gradient()
    curvature, quadrics = curvature_for(op, costs_model.needs, rounding, settings, curvature, cache_dir=cache_dir,
                                        description=name)
    weights = {n: p.detach() for n, p in zip(op.names, op.params)}
    grams = rounding_grams(model, loss_fn, batches, op.names, rounding)
    candidates = _candidates(weights, bits, levels, quantizer, rounding, quadrics, grams, group_sizes)
    edges, graph_note, ties, pairs = _ties_and_pairs(op, name, tie_residuals, interactions)
    signals, cross, paths = collect_signals(SignalInputs(op, gradient, candidates, curvature, quadrics, pairs, llc_radius,
                                                  validation, forms_cache),
                                     costs_model.needs)
    estimates = {n: costs_model.estimate(s) for n, s in signals.items()}
    costs = {n: np.asarray(e.loss, dtype=np.float64) for n, e in estimates.items()}
    kept, removed = select_candidates(candidates, signals, costs, costs_model, layer_eps, ties)
    stderr = {n: e.stderr for n, e in estimates.items() if e.stderr is not None}
    layer_list = problem_layers(candidates, costs, kept, layer_macs(op.model, op.names, op.batches[0], loss_fn),
                                stderr or None)
    terms = interaction_terms(cross, kept)
    info = problem_metadata(method=method, cost_model=costs_model, rounding=rounding, bits=bits, levels=levels,
                            quantizer=quantizer, settings=settings, loss=loss, op=op, graph_note=graph_note,
                            interactions=len(terms), llc_radius=llc_radius, layer_eps=layer_eps, removed=removed,
                            curvature=curvature, extra=metadata)
    info.update(_sign_check(op, candidates, kept, costs, signals))
    # what dominates this problem's prices (cetopt.costmodels.dominance): said beside the cost model's name
    info = {**info, "cost_signal_effects": signal_effects(costs_model, signals)}
    info["coverage"] = _coverage(op, paths, curvature).to_dict()
    if group_sizes is not None:
        info["group_sizes"] = [int(g) for g in group_sizes]
    budget, minimize = problem_form(budget, costs_model.lossless, max_loss, sum(int(w.numel()) for w in weights.values()))
    problem = AllocationProblem(name=name, layers=layer_list, budget=budget, edges=edges, interactions=terms,
                                minimize=minimize, metadata=info)
    if ties:
        problem = problem.with_changes(ties=tuple(ties))
    chosen = {c.name: tuple(c.weights[i] for i in kept[c.name]) for c in candidates}
    return BuiltProblem(problem=problem, weights=chosen, curvature=curvature)


def _sign_check(op: CurvatureOperator, candidates: Sequence[LayerCandidates], kept: Mapping[str, np.ndarray],
                costs: Mapping[str, np.ndarray], signals: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata on negative changes: the kept candidates whose predicted or measured change is negative
    (cetopt.negatives), and, under a fidelity objective at its reference, the check that every prediction is >= 0
    (a WARNING naming the candidates where one is not: the objective's minimum is the FP32 model, so a negative
    prediction is an estimation fault, e.g. a noisy trace)."""
    from cetopt.negatives import negative_candidates

    labels = {c.name: [c.choices[i].label for i in kept[c.name]] for c in candidates}
    predicted = {c.name: np.asarray(costs[c.name])[kept[c.name]] for c in candidates}
    measured = {c.name: (None if getattr(signals[c.name], "measured", None) is None
                         else np.asarray(signals[c.name].measured)[kept[c.name]]) for c in candidates}
    negatives = negative_candidates(labels, predicted, measured)
    info: dict[str, Any] = {"negative_changes": negatives} if negatives else {}
    if op.stationary:
        info["gradient"] = "0 exactly: fidelity objective at its FP32 reference (no gradient pass)"
        wrong = {layer: [label for label, v in found.items() if v["predicted"] < 0]
                 for layer, found in negatives.items()}
        wrong = {layer: labels_ for layer, labels_ in wrong.items() if labels_}
        count = sum(len(v) for v in wrong.values())
        info["fidelity_sign_check"] = "every predicted change >= 0" if not count else f"{count} negative predictions"
        if count:
            log.warning("fidelity objective: %d candidate(s) have a negative predicted change although the objective's "
                        "minimum is the FP32 model (%s); the cost model's estimate is noisy there (stochastic traces?)",
                        count, ", ".join(f"{layer} {'/'.join(v)}" for layer, v in list(wrong.items())[:8]))
    return info


def _coverage(op: CurvatureOperator, paths: Mapping[str, Any], curvature: CurvatureResult | None) -> Any:
    """The build's coverage report (cetopt.curvature.coverage), logged at INFO."""
    from cetopt.curvature.coverage import coverage_report, table_rows_seen
    from cetopt.curvature.operator import eval_mode

    meta = curvature.metadata if curvature is not None else {}
    with eval_mode(op.model):
        tables = table_rows_seen(op.model, op.names, op.loss_fn, op.batches)
    report = coverage_report(op.source_model, op.names, paths, meta.get("trace_estimator"), meta.get("trace_fallback"),
                             tables)
    report.log()
    return report

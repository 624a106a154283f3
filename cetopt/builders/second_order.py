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

Each of these is a field of the :class:`~cetopt.recipe.Recipe` the build follows. The build returns a
:class:`~cetopt.builders.built.PricedProblem`: everything but the budget, which the front end attaches once
(``build(spec, recipe).with_budget(Budget(avg_bits=3))``). The problem records its recipe and provenance in
``metadata``; the :class:`BuiltProblem` keeps each choice's compressed weight, so a solved plan can be applied
exactly as it was scored.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, MutableMapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.builders.assemble import interaction_terms, layer_edges, layer_macs, problem_layers, problem_metadata
from cetopt.builders.built import BuiltProblem, PricedProblem, replace_weights  # noqa: F401  (imported from here)
from cetopt.builders.candidates import LayerCandidates, level_candidates, quantization_candidates
from cetopt.builders.provenance import problem_name, spec_metadata
from cetopt.builders.filters import select_candidates
from cetopt.builders.signals import SignalInputs, collect_signals, curvature_for
from cetopt.costmodels.dominance import signal_effects
from cetopt.costmodels.registry import get_cost_model
from cetopt.curvature.extract import CurvatureSettings
from cetopt.curvature.operator import Batch, CurvatureOperator, LossFn
from cetopt.curvature.result import CurvatureResult
from cetopt.geometry.layer import LayerQuadric
from cetopt.modelspec import ModelSpec
from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, Layer
from cetopt.recipe import DEFAULT_RECIPE, Recipe

log = logging.getLogger(__name__)


def _candidates(weights: Mapping[str, torch.Tensor], recipe: Recipe, quadrics: Mapping[str, LayerQuadric] | None,
                grams: Mapping[str, torch.Tensor] | None) -> list[LayerCandidates]:
    if recipe.levels is None:
        return quantization_candidates(weights, recipe.bits, quantizer=recipe.quantizer, rounding=recipe.rounding,
                                       quadrics=quadrics, grams=grams, group_sizes=recipe.group_sizes)
    return level_candidates(weights, recipe.levels, quantizer=recipe.quantizer, rounding=recipe.rounding,
                            quadrics=quadrics, grams=grams)


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


def build(spec: ModelSpec, recipe: Recipe = DEFAULT_RECIPE, *, target: str | None = None,
          settings: CurvatureSettings | None = None, curvature: CurvatureResult | None = None,
          cache_dir: str | None | bool = None, forms_cache: MutableMapping[str, Any] | None = None,
          metadata: Mapping[str, Any] | None = None) -> PricedProblem:
    """The priced problem of ``spec`` under ``recipe``, without a budget: make candidates, collect the signals the
    cost model needs, score, filter, assemble. Attach the budget with ``.with_budget(Budget(...))``.

    Args:
        spec: the model, its loss, calibration batches (validation batches for cost models that check their
            estimate on another split, cet-holdout) and the layers to plan (``spec.quantisable_layers()``).
        recipe: every choice of the build (cetopt.recipe: cost model, candidates, grid, rounding, terms, ties).
        target: how the model was named (zoo name, module:function, file.py:function), recorded as metadata
            "model_target" so bench, apply and evaluate can load it again (default: the spec's name).
        settings: curvature settings (traces, Lanczos k, device, dtype, seed).
        curvature: a precomputed CurvatureResult of these layers (else extracted, and cached on disk).
        cache_dir: curvature cache (None: default; False: none).
        forms_cache: quadratic forms computed by earlier builds on this same model and calibration data
            (cetopt.builders.signals.SignalInputs.forms_cache); None computes them afresh.
        metadata: more provenance to record (beside the spec's: model, data, fingerprints).
    """
    costs_model = get_cost_model(recipe.cost_model)
    settings = settings or CurvatureSettings()
    name = problem_name(spec.name, recipe)
    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration, layers=spec.quantisable_layers(),
                           device=settings.device, dtype=settings.torch_dtype())
    loss, gradient = op.loss_and_gradient()
    curvature, quadrics = curvature_for(op, costs_model.needs, recipe.rounding, settings, curvature, cache_dir=cache_dir,
                                        description=name)
    weights = {n: p.detach() for n, p in zip(op.names, op.params)}
    grams = rounding_grams(spec.model, spec.loss_fn, spec.calibration, op.names, recipe.rounding)
    candidates = _candidates(weights, recipe, quadrics, grams)
    edges, graph_note, ties, pairs = _ties_and_pairs(op, name, recipe.tie_residuals, recipe.interactions)
    signals, cross, paths = collect_signals(SignalInputs(op, gradient, candidates, curvature, quadrics, pairs,
                                                         recipe.llc_radius, spec.validation, forms_cache),
                                            costs_model.needs)
    estimates = {n: costs_model.estimate(s) for n, s in signals.items()}
    costs = {n: np.asarray(e.loss, dtype=np.float64) for n, e in estimates.items()}
    kept, removed = select_candidates(candidates, signals, costs, costs_model, recipe.layer_eps, ties)
    stderr = {n: e.stderr for n, e in estimates.items() if e.stderr is not None}
    layer_list = problem_layers(candidates, costs, kept, layer_macs(op.model, op.names, op.batches[0], spec.loss_fn),
                                stderr or None)
    terms = interaction_terms(cross, kept)
    found = {"calibration_loss": loss, "layer_graph": graph_note, "interactions": len(terms),
             "removed_candidates": removed}
    info = problem_metadata(recipe, costs_model, op, settings, curvature, found,
                            {**spec_metadata(spec, target), **(metadata or {})})
    info.update(_sign_check(op, candidates, kept, costs, signals))
    # what dominates this problem's prices (cetopt.costmodels.dominance): said beside the cost model's name
    info["cost_signal_effects"] = signal_effects(costs_model, signals)
    info["coverage"] = _coverage(op, paths, curvature).to_dict()
    chosen = {c.name: tuple(c.weights[i] for i in kept[c.name]) for c in candidates}
    return PricedProblem(name=name, layers=layer_list, edges=edges, interactions=terms,
                         ties=tuple(tuple(t) for t in ties), metadata=info, weights=chosen, curvature=curvature,
                         lossless=costs_model.lossless)


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

"""Assemble the AllocationProblem from scored, filtered candidates: layers with MACs and shapes, the layer graph
(traced with torch.fx), interaction terms restricted to the kept choices, and the problem form."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.builders.candidates import LayerCandidates
from cetopt.curvature.operator import Batch, LossFn
from cetopt.errors import ProblemError
from cetopt.problem.model import Budget, Choice, Edge, Interaction, Layer, Minimize
from cetopt.recipe import Recipe

log = logging.getLogger(__name__)


def layer_macs(model: nn.Module, layers: Sequence[str], batch: Batch, loss_fn: LossFn) -> dict[str, int]:
    """Multiply-accumulates per sample of each Linear/Conv layer (0 for an Embedding lookup), from one traced
    forward pass."""
    modules = dict(model.named_modules())
    macs: dict[str, int] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Embedding):  # a lookup: no multiply-accumulates
                macs[name] = 0
                return
            per_out = module.weight[0].numel()  # in_features (x kernel area) per output element
            macs[name] = int(output[0].numel() * per_out) if output.dim() > 1 else int(output.numel() * per_out)
        return record

    # a bare Parameter (nn.MultiheadAttention.in_proj_weight) has no module call of its own: MACs unknown
    handles = [modules[name].register_forward_hook(hook(name)) for name in layers if name in modules]
    try:
        with torch.no_grad():
            loss_fn(model, batch)
    finally:
        for h in handles:
            h.remove()
    return macs


def layer_edges(model: nn.Module, names: list[str], label: str) -> tuple[tuple[Edge, ...], str]:
    """The layer graph's edges and how they were found (torch.fx, or the sequential order when fx fails)."""
    try:
        from cetopt.curvature.graph import traced_edges

        return traced_edges(model, names), ("layer graph (feeds, shared inputs, residual adds) traced with torch.fx, "
                                            "every quantisable layer a leaf module; the curvature paths per layer "
                                            "are in the coverage record")
    except Exception as err:  # fx cannot trace data-dependent control flow: say so, use the layer order
        log.warning("torch.fx could not trace %s (%s); using the sequential layer order, no residual ties",
                    label, type(err).__name__)
        edges = tuple(Edge(a, b) for a, b in zip(names[:-1], names[1:]))
        return edges, f"sequential order of the quantisable layers (torch.fx could not trace: {type(err).__name__})"


def problem_layers(candidates: Sequence[LayerCandidates], costs: Mapping[str, np.ndarray],
                   kept: Mapping[str, np.ndarray], macs: Mapping[str, int],
                   stderr: Mapping[str, np.ndarray | None] | None = None) -> tuple[Layer, ...]:
    """One Layer per candidate set, with the kept choices and their predicted losses."""
    out = []
    for cand in candidates:
        w = cand.original
        layer_stderr = (stderr or {}).get(cand.name)
        choices = tuple(Choice(bits=cand.choices[i].bits, loss=float(costs[cand.name][i]), rank=cand.choices[i].rank,
                               terms=cand.choices[i].terms, size_bits=cand.choices[i].size_bits,
                               rounding=cand.choices[i].rounding, group_size=cand.choices[i].group_size,
                               **({"loss_stderr": float(layer_stderr[i])} if layer_stderr is not None else {}))
                        for i in kept[cand.name])
        out.append(Layer(name=cand.name, params=int(w.numel()), macs=macs.get(cand.name),
                         shape=(int(w.shape[0]), int(w[0].numel())), choices=choices))
    return tuple(out)


def interaction_terms(cross: Mapping[tuple[str, str], np.ndarray], kept: Mapping[str, np.ndarray]
                      ) -> tuple[Interaction, ...]:
    """Cross terms d_a'H_ab d_b restricted to the kept choices of a and b."""
    return tuple(Interaction(a=a, b=b, loss=tuple(tuple(float(v) for v in row) for row in m[np.ix_(kept[a], kept[b])]))
                 for (a, b), m in cross.items())


def problem_form(budget: Budget | None, lossless: bool, max_loss: float, total_params: int) -> tuple[Budget, Minimize]:
    """The budget and what is minimised: a budget on the predicted loss alone (a lossless cost model's form when no
    budget is given: predicted change <= ``max_loss``) is the "maximise compression" form (minimise size under it);
    otherwise minimise the loss.

    Raises:
        ProblemError(field="budget"): no budget for a cost model that is not lossless.
    """
    if budget is None:
        if not lossless:
            raise ProblemError("the problem needs a budget: attach one, e.g. priced.with_budget(Budget(avg_bits=3)) "
                               "(cetopt.recipe.DEFAULT_AVG_BITS is the front ends' default)", field="budget")
        budget = Budget(max_loss=max_loss)
    loss_only = budget.max_loss is not None and budget.bops is None and budget.max_size_bits(total_params) is None
    return budget, Minimize.SIZE if loss_only else Minimize.LOSS


def problem_metadata(recipe: Recipe, cost_model: Any, op: Any, settings: Any, curvature: Any,
                     found: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The problem's provenance: its recipe (under "recipe", what :meth:`Recipe.from_metadata` reads back, and
    spelled out in the older keys that plans and apply read: method, rounding, bits, quantizer, ...), the cost
    model's description, the curvature settings, the data size, and what the build ``found`` (calibration_loss,
    layer_graph: how the graph was traced, interactions: the number of terms, removed_candidates), plus the
    caller's ``extra`` (model, data, fingerprints)."""
    removed = found.get("removed_candidates")
    info: dict[str, Any] = {
        "method": recipe.cost_model, "recipe": recipe.to_dict(), "cost_model": cost_model.describe(),
        "rounding": recipe.rounding, "bits": list(recipe.bits),
        **({"levels": recipe.levels.to_dict()} if recipe.levels is not None else {}),
        "quantizer": recipe.quantizer.to_dict(), "curvature": asdict(settings),
        "calibration_loss": found["calibration_loss"], "calibration_batches": len(op.batches),
        "device": str(op.device), "layer_graph": found["layer_graph"], "interactions": found["interactions"],
        **({"llc_radius": recipe.llc_radius} if cost_model.lossless else {}),
        **({"layer_eps": recipe.layer_eps} if recipe.layer_eps is not None else {}),
        **({"group_sizes": list(recipe.group_sizes)} if recipe.group_sizes is not None else {}),
        **({"removed_candidates": dict(removed)} if removed else {}), **(extra or {})}
    if "trace_per_weight" in cost_model.needs and curvature is not None:
        names = set(op.names)
        info["traces"] = {l.name: [l.trace, l.trace_stderr, l.n_probes] for l in curvature.layers if l.name in names}
    return info

"""Reading an artefact back: every manifest field, both files' SHA-256 and sizes and the stored data re-derived
from the plan on the source model are checked before the unpacked model is returned or measured."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cetopt.artifact.files import (MANIFEST_FILE, PLAN_FILE, WEIGHTS_FILE, plan_weights, read_manifest, read_weights,
                                   state_fingerprint, unpacked_model)
from cetopt.artifact.write import calibrate_activations, pack_model, plan_grams, plan_quadrics
from cetopt.errors import ProblemError
from cetopt.quant.pack import model_packed_size
from cetopt.quant.plan import Plan
from cetopt.spec import ModelSpec


@dataclass(frozen=True)
class CompressedModel:
    """An artefact unpacked into a torch model.

    Attributes:
        model: the spec's architecture with the artefact's weights (floating point, decoded).
        plan: the plan it was made with.
        manifest: DIR's manifest.
        weights: planned layer -> its decoded weight (what cetopt.measure.Measurer swaps in).
        activations: layer -> its input's grid (cetopt.quant.activations.ActivationGrid; empty: weights only).
    """

    model: nn.Module
    plan: Plan
    manifest: Mapping[str, Any]
    weights: Mapping[str, torch.Tensor]
    activations: Mapping[str, Any] = field(default_factory=dict)


def _verify_source(directory: Path, spec: ModelSpec, plan: Plan, manifest: Mapping[str, Any],
                   tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> None:
    """The artefact is exactly what ``plan`` gives on ``spec.model``: same source weights (fingerprint), and
    every stored tensor, layout entry and size re-derived from the source and compared."""
    if manifest["source_fingerprint"] != state_fingerprint(spec.model):
        raise ProblemError(f"{directory} was made from other weights than those of {spec.name!r} (fingerprints "
                           "differ); evaluate it with the --model it was applied to", field="model")
    quadrics = plan_quadrics(spec, plan)
    expected, expected_layout, buffer_bytes, _, _ = pack_model(spec, plan, quadrics, plan_grams(spec, plan, quadrics))
    size = model_packed_size(spec.model, plan)
    differ = sorted(set(expected) ^ set(tensors))
    if not differ:
        differ = [k for k, t in expected.items() if t.dtype != tensors[k].dtype or t.shape != tensors[k].shape
                  or not torch.equal(t, tensors[k])]
    if not differ and json.dumps(expected_layout, sort_keys=True) != json.dumps(layout, sort_keys=True):
        differ = [next(n for n in expected_layout if json.dumps(expected_layout[n], sort_keys=True)
                       != json.dumps(layout.get(n), sort_keys=True))]
    if not differ and (size.total_bits != manifest["packed_bits"] or buffer_bytes != manifest["buffer_bytes"]):
        differ = [f"{MANIFEST_FILE}.packed_bits"]
    if differ:
        raise ProblemError(f"{directory}: what it stores differs from what its plan.json gives on {spec.name!r} "
                           f"(first: {differ[0]!r:.120}): the artefact was altered after it was written (a re-hashed "
                           "manifest does not make it valid) or mixes two runs; apply the plan again",
                           field="artifact")


def load_compressed(directory: str | os.PathLike[str], spec: ModelSpec, *, verify: bool = True) -> CompressedModel:
    """Unpack DIR into a copy of ``spec.model`` (every state-dict entry comes from the artefact).

    Args:
        spec: the model the artefact was applied to.
        verify: check the artefact against ``spec``: the manifest's source fingerprint equals ``spec.model``'s,
            and every stored tensor, layout entry and size is what ``plan.json`` gives on it (re-derived, so an
            edited plan, a flipped data bit under a re-hashed manifest, or one run's plan with another run's
            weights is refused). False: unpack only (then ``spec`` only has to have the same architecture).

    Raises:
        ProblemError: not an artefact, a damaged or edited file, another model's artefact.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    plan = Plan.load(directory / PLAN_FILE)
    from cetopt.quant.fold import folded_if_planned

    spec = folded_if_planned(spec, plan.extra)  # the artefact stores the folded model's state
    tensors, layout = read_weights(directory)
    plan_weights(spec.model, plan)
    if verify:
        _verify_source(directory, spec, plan, manifest, tensors, layout)
    model, weights = unpacked_model(spec.model, plan, tensors, layout)
    grids = _recorded_activations(directory, manifest, plan)
    if verify and grids:
        _verify_activations(directory, model, spec, plan, grids, manifest["activations"]["observer"])
    return CompressedModel(model=model, plan=plan, manifest=manifest, weights=weights, activations=grids)


def _recorded_activations(directory: Path, manifest: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """model.safetensors' activation grids (layer -> ActivationGrid), checked against the manifest's summary;
    {} for a weights-only artefact."""
    from safetensors import safe_open

    from cetopt.inputs import parse_json
    from cetopt.quant.activations import ActivationGrid

    summary = manifest.get("activations")
    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as handle:
        text = (handle.metadata() or {}).get("activations")
    if summary is None and text is None:
        return {}
    record = parse_json(text, f"{WEIGHTS_FILE} metadata 'activations'") if text is not None else None
    if not isinstance(summary, dict) or not isinstance(record, dict) or not isinstance(record.get("layers"), dict) or \
            any(summary.get(k) != record.get(k) for k in ("bits", "observer", "calibration_batches")) or \
            summary.get("inputs") != len(record["layers"]):
        raise ProblemError(f"the manifest's activations and {WEIGHTS_FILE}'s disagree; the artefact is damaged or was "
                           "edited", field=f"{MANIFEST_FILE}.activations")
    grids = {}
    for name, entry in record["layers"].items():
        if name not in plan.layers:
            raise ProblemError(f"an activation grid for {name!r}, which the plan does not quantise",
                               field=f"activations.{name}")
        grids[name] = ActivationGrid.from_dict(name, entry, f"activations.{name}")
        if grids[name].bits != record["bits"]:
            raise ProblemError(f"{grids[name].bits} bits where the artefact records {record['bits']}",
                               field=f"activations.{name}.bits")
    return grids


ACTIVATION_RTOL = 1e-4  # recalibration may differ in the last bits (thread count, kernel choice)


def _verify_activations(directory: Path, model: nn.Module, spec: ModelSpec, plan: Plan,
                        grids: Mapping[str, Any], observer: str) -> None:
    """The recorded grids are what calibration gives on the unpacked weights (re-run; ranges within
    ACTIVATION_RTOL of their width, zero points within one code)."""
    again = calibrate_activations(model, spec, plan, next(iter(grids.values())).bits, observer)
    for name in set(grids) | set(again):
        a, b = grids.get(name), again.get(name)
        width = max(abs(b.high - b.low), 1e-30) if b is not None else 1.0
        if a is None or b is None or abs(a.low - b.low) > ACTIVATION_RTOL * width or \
                abs(a.high - b.high) > ACTIVATION_RTOL * width or abs(a.zero_point - b.zero_point) > 1:
            raise ProblemError(f"{directory}: the activation grid of {name!r} is not what calibration on its weights "
                               "gives (the artefact was altered, or the spec's calibration batches changed); apply "
                               "the plan again", field=f"activations.{name}")


def evaluate_artifact(directory: str | os.PathLike[str], spec: ModelSpec) -> dict[str, Any]:
    """Load DIR into ``spec``'s model and measure it (metrics, calibration loss change) beside the sizes.

    Raises:
        ProblemError: the artefact was made from other weights than ``spec.model``'s (fingerprints differ),
            so the change it measures would be meaningless.
    """
    from cetopt.measure import Measurer

    from cetopt.quant.fold import folded_if_planned

    loaded = load_compressed(directory, spec)  # verified against spec (fingerprint, every stored tensor)
    measurer = Measurer(folded_if_planned(spec, loaded.plan.extra))
    measured = measurer.measure(loaded.weights, activations=loaded.activations)
    m = loaded.manifest
    return {"model": spec.name, "metric_name": measured.metric_name, "metric": measured.metric,
            "fp_metric": measurer.fp_metrics.get(measured.metric_name) if measured.metric_name else None,
            "metrics": dict(measured.metrics), "calibration_dloss": measured.calibration_dloss,
            "validation_dloss": measured.validation_dloss, "file_bytes": m["file_bytes"],
            "packed_bytes": -(-m["packed_bits"] // 8), "buffer_bytes": m["buffer_bytes"],
            "header_bytes": m["file_bytes"] - m["data_bytes"],
            "packed_ratio": m["packed_ratio"], "layers": len(loaded.plan.layers),
            "activations": m.get("activations"), "bops": m.get("bops")}

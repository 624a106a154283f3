"""Writing an artefact: pack each planned layer (its rounding's signals computed when the rounding needs them),
calibrate activation grids when asked, and write DIR whole through a staging folder."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from cetopt._atomic import atomic_write_text
from cetopt.artifact.files import (ARTIFACT_FILES, ARTIFACT_FORMAT, MANIFEST_FILE, PLAN_FILE, WEIGHTS_FILE, ArtifactInfo,
                                   bundle, file_sha256, model_target, plan_weights, state_fingerprint, unpacked_model)
from cetopt.curvature.layers import weight_key
from cetopt.errors import ProblemError
from cetopt.quant.pack import compress_layer, model_packed_size
from cetopt.quant.plan import Plan
from cetopt.spec import ModelSpec


def _layers_needing(plan: Plan, what: str) -> list[str]:
    from cetopt.quant.rounding import rounding_needs

    return [n for n, c in plan.layers.items() if what in rounding_needs(c.rounding)]


def plan_grams(spec: ModelSpec, plan: Plan, quadrics: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Layer-input Gram matrices for the plan's layers rounded by adaround or gptq, on the spec's calibration
    batches: the same function and data the problem's candidates were rounded with, so the codes match. A plan
    whose ``extra`` sets ``sequential_rounding`` gets each layer's Gram matrix from the inputs of the model with
    its upstream planned layers compressed (cetopt.quant.rounding.sequential; ``quadrics`` for its major-axis
    layers)."""
    from cetopt.builders.second_order import rounding_grams
    from cetopt.quant.rounding.sequential import SEQUENTIAL_KEY, sequential_grams

    names = _layers_needing(plan, "gram")
    if not names:
        return None
    if plan.extra.get(SEQUENTIAL_KEY):
        return sequential_grams(spec.model, plan, spec.loss_fn, spec.calibration, quadrics=quadrics)
    return rounding_grams(spec.model, spec.loss_fn, spec.calibration, names, "gptq")


def plan_quadrics(spec: ModelSpec, plan: Plan) -> dict[str, Any] | None:
    """Layer quadrics for the plan's major-axis layers, from the curvature the problem was built with (the
    settings in ``plan.extra["curvature"]``; extracted once, then read from the curvature cache)."""
    names = _layers_needing(plan, "quadric")
    if not names:
        return None
    from cetopt.curvature.extract import CurvatureSettings, extract_curvature
    from cetopt.geometry.layer import LayerQuadric

    settings = CurvatureSettings(**plan.extra.get("curvature", {}))
    layers = spec.quantisable_layers() or list(plan.layers)
    result = extract_curvature(spec.model, spec.loss_fn, spec.calibration, settings=settings, layers=layers,
                               show_progress=False, description=spec.name)
    return {n: LayerQuadric.from_curvature(result.layer(n)) for n in names}


def _check_out(out: Path) -> None:
    """``out`` must be new, an empty folder, or an artefact to replace (it is swapped out whole)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ProblemError(f"{str(out)!r} exists and is not a folder; give a new folder", field="--out")
    if out.is_dir():
        extra = sorted(p.name for p in out.iterdir() if p.name not in ARTIFACT_FILES)
        if extra:
            raise ProblemError(f"{str(out)!r} holds files that are not a cetopt artefact's ({extra[:3]}); the artefact "
                               "replaces the whole folder, so give a new or empty folder", field="--out")


class PackedModel(NamedTuple):
    """What DIR's model.safetensors holds, with its byte split (codes, scales and offsets, buffers)."""

    tensors: dict[str, torch.Tensor]
    layout: dict[str, Any]
    buffer_bytes: int
    code_bytes: int
    scale_bytes: int


def pack_model(spec: ModelSpec, plan: Plan, quadrics: Mapping[str, Any] | None,
               grams: Mapping[str, Any] | None) -> PackedModel:
    """What DIR's model.safetensors holds: tensors by name, layout per planned layer and the byte split."""
    modules = plan_weights(spec.model, plan)
    from cetopt.quant.rounding.base import RoundingContext

    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    code_bytes = scale_bytes = 0
    for name, choice in plan.layers.items():
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=(grams or {}).get(name))
        packed = compress_layer(modules[name], choice, plan.quantizer_of(name), context=context, name=name)
        tensors.update(packed.tensors)
        layout[name] = packed.layout
        for key, t in packed.tensors.items():
            nbytes = t.numel() * t.element_size()
            code_bytes += nbytes if key.endswith(".codes") else 0
            scale_bytes += nbytes if key.endswith((".scale", ".offset")) else 0
    planned = {weight_key(spec.model, name) for name in plan.layers}
    params = {n for n, _ in spec.model.named_parameters()}
    buffer_bytes = 0
    for key, value in spec.model.state_dict().items():
        if key not in planned:
            tensors[key] = value.detach().cpu().contiguous().clone()
            buffer_bytes += 0 if key in params else value.numel() * value.element_size()
    return PackedModel(tensors, layout, buffer_bytes, code_bytes, scale_bytes)


def check_plan_fingerprint(spec: ModelSpec, plan: Plan, *, require: bool = True) -> None:
    """The plan's recorded fingerprints against ``spec``: every key of cetopt.fingerprint.KEYS must be there
    (unless ``require`` is False: then a WARNING says nothing ties the plan to these weights) and equal.

    Raises:
        FingerprintMismatchError: a recorded digest differs, or one is missing while ``require``.
    """
    import logging

    from cetopt.fingerprint import KEYS, FingerprintMismatchError, check_fingerprint, recorded

    check_fingerprint(plan.extra, spec, what="plan", layers=list(plan.layers))  # what is recorded must agree
    missing = [k for k in KEYS if k not in recorded(plan.extra)]
    if missing and require:
        raise FingerprintMismatchError(
            f"the plan records no {', '.join(missing)} (extra), so nothing ties it to the weights of {spec.name!r}; "
            "write plans with cetopt solve --out / cetopt plan from a problem extracted on this model, or pass "
            "--allow-no-fingerprint to apply it unverified", fields=missing)
    if missing:
        logging.getLogger(__name__).warning("the plan records no %s: applying it to %r unverified "
                                            "(--allow-no-fingerprint)", ", ".join(missing), spec.name)


def write_artifact(spec: ModelSpec, plan: Plan, out: str | os.PathLike[str], *, target: str | None = None,
                   require_fingerprint: bool = True, activation_bits: int | None = None,
                   observer: str = "minmax", sequential: bool = False) -> ArtifactInfo:
    """Compress ``spec.model`` by ``plan`` and write DIR (see the module docstring).

    DIR is built in a staging folder next to it and swapped into place whole (cetopt._atomic.staged_dir): an
    existing artefact survives a failed or killed run, two runs into one DIR never mix, and nothing is left
    behind on an error. ``require_fingerprint``: refuse a plan without fingerprints (check_plan_fingerprint).
    ``activation_bits`` (4 or 8): also calibrate a static per-tensor grid for each planned layer's input
    (``observer``: "minmax" or "percentile"; cetopt.quant.activations); None: weights only. A rounding that needs
    curvature (major-axis) or layer-input Gram matrices (gptq, adaround) gets them computed here. ``sequential``:
    round the plan's adaround/gptq layers on the inputs of the model with their upstream layers already compressed
    (GPTQ's order; cetopt.quant.rounding.sequential), recorded in the stored plan's ``extra`` so evaluate re-derives
    the same codes.

    Raises:
        ProblemError: DIR holds other files, the plan names layers the model lacks, or bad activation options.
        FingerprintMismatchError: the plan was made on other weights, or records no fingerprint.
    """
    from cetopt.quant.fold import folded_if_planned

    out = Path(out)
    _check_out(out)
    spec = folded_if_planned(spec, plan.extra)  # a plan made on the folded model is applied to it
    plan_weights(spec.model, plan)
    if activation_bits is not None:
        from cetopt.quant.activations import check_activation_options

        check_activation_options(activation_bits, observer)  # before any work
    check_plan_fingerprint(spec, plan, require=require_fingerprint)
    if sequential:
        from cetopt.quant.rounding.sequential import SEQUENTIAL_KEY

        plan = replace(plan, extra={**plan.extra, SEQUENTIAL_KEY: True})
    quadrics = plan_quadrics(spec, plan)
    packed = pack_model(spec, plan, quadrics, plan_grams(spec, plan, quadrics))
    grids: dict[str, Any] = {}
    activations = None
    if activation_bits is not None:
        unpacked, _ = unpacked_model(spec.model, plan, packed.tensors, packed.layout)
        grids = calibrate_activations(unpacked, spec, plan, activation_bits, observer)
        activations = {"bits": activation_bits, "observer": observer, "calibration_batches": len(spec.calibration),
                       "layers": {n: g.to_dict() for n, g in grids.items()}}
    bops = artifact_bops(spec, plan, activation_bits)
    size = model_packed_size(spec.model, plan)
    manifest = _write_files(out, spec, plan, packed, activations,
                            {"target": model_target(target or plan.model), "bops": bops, "size": size})
    return ArtifactInfo(directory=out, size=size, file_bytes=manifest["file_bytes"],
                        data_bytes=manifest["data_bytes"], buffer_bytes=packed.buffer_bytes,
                        code_bytes=packed.code_bytes, scale_bytes=packed.scale_bytes, activations=grids, bops=bops)


def _write_files(out: Path, spec: ModelSpec, plan: Plan, packed: PackedModel, activations: Mapping[str, Any] | None,
                 recorded: Mapping[str, Any]) -> dict[str, Any]:
    """Write model.safetensors, plan.json and manifest.json into DIR through a staging folder; the manifest.

    ``recorded``: the manifest's "target" (normalised), "bops" record and the predicted "size" (PackedSize)."""
    from safetensors.torch import save

    from cetopt._atomic import atomic_write_bytes, staged_dir

    flat, index = bundle(packed.tensors)
    compact = {"separators": (",", ":")}
    blob = save(flat, metadata={"format": ARTIFACT_FORMAT, "layout": json.dumps(packed.layout, **compact),
                                "index": json.dumps(index, **compact),
                                **({"activations": json.dumps(activations, **compact)} if activations else {})})
    size = recorded["size"]
    data_bytes = sum(t.numel() * t.element_size() for t in packed.tensors.values())
    with staged_dir(out) as stage:
        weights_path = atomic_write_bytes(stage / WEIGHTS_FILE, blob)
        plan_path = plan.save(stage / PLAN_FILE)
        manifest = {"format": ARTIFACT_FORMAT, "model": spec.name, "target": recorded["target"],
                    "source_fingerprint": state_fingerprint(spec.model), "plan_sha256": file_sha256(plan_path),
                    "weights_sha256": file_sha256(weights_path), "file_bytes": weights_path.stat().st_size,
                    "data_bytes": data_bytes, "code_bytes": packed.code_bytes, "scale_bytes": packed.scale_bytes,
                    "other_bytes": data_bytes - packed.code_bytes - packed.scale_bytes,
                    "buffer_bytes": packed.buffer_bytes, "packed_bits": size.total_bits,
                    "fp32_bits": size.fp32_bits, "packed_ratio": size.ratio,
                    "activations": None if activations is None else
                    {k: v for k, v in activations.items() if k != "layers"} | {"inputs": len(activations["layers"])},
                    "bops": recorded["bops"], "provenance": _provenance(spec, plan)}
        atomic_write_text(stage / MANIFEST_FILE, json.dumps(manifest, indent=1, allow_nan=False) + "\n")
    return manifest


def calibrate_activations(model: nn.Module, spec: ModelSpec, plan: Plan, bits: int, observer: str) -> dict[str, Any]:
    """The plan's layers' input grids on ``model`` (the unpacked weights), on the spec's calibration batches."""
    from cetopt.quant.activations import calibrate_inputs, quantisable_inputs

    layers = quantisable_inputs(model, list(plan.layers))
    return calibrate_inputs(model, spec.loss_fn, spec.calibration, layers, bits=bits, observer=observer)


def artifact_bops(spec: ModelSpec, plan: Plan, activation_bits: int | None) -> dict[str, Any]:
    """The BOPs the artefact implies, beside the plan's (the manifest's ``bops``).

    ``total``: the planned layers' bit-operations per sample (cetopt.problem.model.default_bops, MACs counted
    on one calibration batch as the problem builder counts them) with the activation bits actually used:
    ``activation_bits``, or 32 when the artefact leaves activations in float32. ``plan_total`` and
    ``plan_activation_bits``: what the plan recorded from its problem (None for a plan without them). The two
    agree when the artefact quantises activations to the width the problem assumed.
    """
    from cetopt.builders.assemble import layer_macs
    from cetopt.problem.model import default_bops
    from cetopt.quant.activations import FLOAT_ACTIVATION_BITS

    bits = activation_bits if activation_bits is not None else FLOAT_ACTIVATION_BITS
    modules = dict(spec.model.named_modules())
    macs = layer_macs(spec.model, list(plan.layers), spec.calibration[0], spec.loss_fn)
    total: float | None = 0.0
    for name, choice in plan.layers.items():
        if name not in macs or total is None:
            total = None
            continue
        weight = modules[name].weight
        total += default_bops(macs[name], choice.bits, bits, terms=choice.terms, rank=choice.rank,
                              shape=(int(weight.shape[0]), int(weight[0].numel())))
    return {"activation_bits": bits, "total": total, "plan_activation_bits": plan.extra.get("activation_bits"),
            "plan_total": plan.extra.get("bops")}


def _provenance(spec: ModelSpec, plan: Plan) -> dict[str, Any]:
    from cetopt._versions import __version__

    meta = {k: v for k, v in spec.metadata.items() if isinstance(v, (str, int, float, bool))}
    return {"cetopt": __version__, "torch": torch.__version__, "data": spec.data, "problem": plan.problem,
            "solver": plan.extra.get("solver"), "model_metadata": meta}

"""Compressed-model artefacts: what ``cetopt apply PLAN --model SPEC --out DIR`` writes and ``cetopt evaluate
DIR`` reads back.

DIR holds
- ``model.safetensors``: each planned layer's packed integer codes and float32 scales (offsets, low-rank
  factors, series terms; cetopt.quant.pack), every other parameter and buffer as it was, concatenated per
  dtype (:func:`bundle`: a small header); the index and the layout of the packed parts in its metadata;
- ``plan.json``: the plan (cetopt.plan/2);
- ``manifest.json``: format, model target, fingerprints (SHA-256 of the source weights, of the plan and of
  model.safetensors), the predicted packed size next to the file's bytes (codes, scales, other parameters,
  container overhead), the activation quantisation and the BOPs it implies, cetopt and torch versions.

With ``activation_bits`` (``cetopt apply --activation-bits 8``) the input of every planned layer but embeddings
gets a static per-tensor grid calibrated on the spec's calibration batches through the unpacked weights
(cetopt.quant.activations); the grids are in model.safetensors' metadata (``activations``), summarised in
the manifest, and :func:`evaluate_artifact` runs the model with those inputs fake-quantised.

docs/artifact-format.md specifies the layout well enough to read it without cetopt.

:func:`load_compressed` unpacks DIR into a copy of the spec's model, after checking every manifest field,
both files' SHA-256 and sizes, and that the stored data are what plan.json gives on the source model
(re-derived); :func:`evaluate_artifact` measures it through cetopt.measure. DIR is built in a staging
folder beside it and swapped in whole (cetopt._atomic.staged_dir). The model is never taken from the
manifest's ``target``: that is shown and compared (cetopt.modelspec.choose_model).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from cetopt._atomic import atomic_write_text
from cetopt.curvature.layers import weight_key
from cetopt.errors import ProblemError
from cetopt.modelspec import ModelSpec
from cetopt.quant.pack import PackedSize, compress_layer, model_packed_size, unpack_layer
from cetopt.quant.plan import Plan

ARTIFACT_FORMAT = "cetopt.artifact/1"
WEIGHTS_FILE, PLAN_FILE, MANIFEST_FILE = "model.safetensors", "plan.json", "manifest.json"


def state_fingerprint(model: nn.Module) -> str:
    """SHA-256 of ``model``'s full state dict (cetopt.fingerprint's definition)."""
    from cetopt.fingerprint import weights_sha256

    return weights_sha256(model)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_target(target: str) -> str:
    """``target`` with a ``file.py:function`` path made absolute (cetopt.modelspec.normalise_target)."""
    from cetopt.modelspec import normalise_target

    return normalise_target(target)


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


def bundle(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, list]]]:
    """All tensors of one dtype concatenated into one flat tensor (``bundle.<dtype>``), with an index
    dtype -> name -> [shape, start]: a few header entries instead of one per tensor (MobileNetV2: 367)."""
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        groups.setdefault(str(t.dtype).removeprefix("torch."), []).append((name, t))
    flat, index = {}, {}
    for dtype, items in groups.items():
        index[dtype], start = {}, 0
        for name, t in items:
            index[dtype][name] = [list(t.shape), start]
            start += t.numel()
        flat[f"bundle.{dtype}"] = torch.cat([t.detach().cpu().reshape(-1) for _, t in items])
    return flat, index


def unbundle(flat: Mapping[str, torch.Tensor], index: Mapping[str, Mapping[str, list]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`bundle`."""
    out = {}
    try:
        for dtype, entries in index.items():
            data = flat[f"bundle.{dtype}"]
            for name, (shape, start) in entries.items():
                count = 1
                for s in shape:
                    count *= int(s)
                out[name] = data[start:start + count].reshape(shape).clone()
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise ProblemError(f"{WEIGHTS_FILE}: its tensor index does not match its data ({err})", field="index") from None
    return out


@dataclass(frozen=True)
class ArtifactInfo:
    """What :func:`write_artifact` wrote.

    Attributes:
        directory: DIR.
        size: the predicted packed size (cetopt.quant.pack.PackedSize).
        file_bytes: bytes of model.safetensors (header included).
        data_bytes: bytes of its tensors (no header).
        buffer_bytes: bytes of the stored buffers (BatchNorm statistics; part of the packed size).
        code_bytes: bytes of the planned layers' bit-packed integer codes.
        scale_bytes: bytes of their float32 scales and offsets.
        activations: layer -> its input's grid (cetopt.quant.activations; empty: weights only).
        bops: the manifest's ``bops`` record (:func:`artifact_bops`).

    ``data_bytes`` = codes + scales + other parameters (:attr:`other_bytes`, buffers included), and the file
    adds its container overhead (:attr:`overhead_bytes`): the size vocabulary of docs/artifact-format.md.
    """

    directory: Path
    size: PackedSize
    file_bytes: int
    data_bytes: int
    buffer_bytes: int
    code_bytes: int = 0
    scale_bytes: int = 0
    activations: Mapping[str, Any] = field(default_factory=dict)
    bops: Mapping[str, Any] = field(default_factory=dict)

    @property
    def other_bytes(self) -> int:
        """Everything stored in floating point: unplanned parameters, float low-rank factors, buffers."""
        return self.data_bytes - self.code_bytes - self.scale_bytes

    @property
    def overhead_bytes(self) -> int:
        """The container's own bytes: the safetensors header."""
        return self.file_bytes - self.data_bytes

    @property
    def predicted_bytes(self) -> int:
        """The packed size in bytes: what the tensors in the file add up to."""
        return self.size.total_bytes


def _check_layers(model: nn.Module, plan: Plan) -> dict[str, nn.Parameter]:
    """Layer -> its weight Parameter (cetopt.curvature.layers.layer_weight: a module's weight or a bare Parameter)."""
    from cetopt.curvature.layers import layer_weight

    weights, missing = {}, []
    for name in plan.layers:
        try:
            weights[name] = layer_weight(model, name)
        except ProblemError:
            missing.append(name)
    if missing:
        raise ProblemError(f"the plan names layers the model lacks: {missing[:5]}; was it made for another model?",
                           field="layers")
    return weights


ARTIFACT_FILES = frozenset((WEIGHTS_FILE, PLAN_FILE, MANIFEST_FILE))


def _check_out(out: Path) -> None:
    """``out`` must be new, an empty folder, or an artefact to replace (it is swapped out whole)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ProblemError(f"{str(out)!r} exists and is not a folder; give a new folder", field="--out")
    if out.is_dir():
        extra = sorted(p.name for p in out.iterdir() if p.name not in ARTIFACT_FILES)
        if extra:
            raise ProblemError(f"{str(out)!r} holds files that are not a cetopt artefact's ({extra[:3]}); the artefact "
                               "replaces the whole folder, so give a new or empty folder", field="--out")


class _Packed(NamedTuple):
    """What DIR's model.safetensors holds, with its byte split (codes, scales and offsets, buffers)."""

    tensors: dict[str, torch.Tensor]
    layout: dict[str, Any]
    buffer_bytes: int
    code_bytes: int
    scale_bytes: int


def _pack(spec: ModelSpec, plan: Plan, quadrics: Mapping[str, Any] | None,
          grams: Mapping[str, Any] | None) -> _Packed:
    """What DIR's model.safetensors holds: tensors by name, layout per planned layer and the byte split."""
    modules = _check_layers(spec.model, plan)
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
    return _Packed(tensors, layout, buffer_bytes, code_bytes, scale_bytes)


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
                   quadrics: Mapping[str, Any] | None = None, grams: Mapping[str, Any] | None = None,
                   require_fingerprint: bool = True, activation_bits: int | None = None,
                   observer: str = "minmax", sequential: bool = False) -> ArtifactInfo:
    """Compress ``spec.model`` by ``plan`` and write DIR (see the module docstring).

    DIR is built in a staging folder next to it and swapped into place whole (cetopt._atomic.staged_dir): an
    existing artefact survives a failed or killed run, two runs into one DIR never mix, and nothing is left
    behind on an error. ``require_fingerprint``: refuse a plan without fingerprints (check_plan_fingerprint).
    ``activation_bits`` (4 or 8): also calibrate a static per-tensor grid for each planned layer's input
    (``observer``: "minmax" or "percentile"; cetopt.quant.activations); None: weights only. ``sequential``: round the
    plan's adaround/gptq layers on the inputs of the model with their upstream layers already compressed (GPTQ's
    order; cetopt.quant.rounding.sequential), recorded in the stored plan's ``extra`` so evaluate re-derives it.

    Raises:
        ProblemError: DIR holds other files, the plan names layers the model lacks, or bad activation options.
        FingerprintMismatchError: the plan was made on other weights, or records no fingerprint.
    """
    from safetensors.torch import save

    from cetopt._atomic import atomic_write_bytes, staged_dir

    out = Path(out)
    _check_out(out)
    from cetopt.quant.fold import folded_if_planned

    spec = folded_if_planned(spec, plan.extra)  # a plan made on the folded model is applied to it
    _check_layers(spec.model, plan)
    if activation_bits is not None:
        from cetopt.quant.activations import check_activation_options

        check_activation_options(activation_bits, observer)  # before any work
    check_plan_fingerprint(spec, plan, require=require_fingerprint)
    if sequential:
        from dataclasses import replace

        from cetopt.quant.rounding.sequential import SEQUENTIAL_KEY

        plan = replace(plan, extra={**plan.extra, SEQUENTIAL_KEY: True})
    if quadrics is None:
        quadrics = plan_quadrics(spec, plan)
    if grams is None:
        grams = plan_grams(spec, plan, quadrics)
    tensors, layout, buffer_bytes, code_bytes, scale_bytes = _pack(spec, plan, quadrics, grams)
    grids: dict[str, Any] = {}
    activations = None
    if activation_bits is not None:
        unpacked, _ = _unpacked(spec.model, plan, tensors, layout)
        grids = _calibrate(unpacked, spec, plan, activation_bits, observer)
        activations = {"bits": activation_bits, "observer": observer, "calibration_batches": len(spec.calibration),
                       "layers": {n: g.to_dict() for n, g in grids.items()}}
    flat, index = bundle(tensors)
    compact = {"separators": (",", ":")}
    blob = save(flat, metadata={"format": ARTIFACT_FORMAT, "layout": json.dumps(layout, **compact),
                                "index": json.dumps(index, **compact),
                                **({"activations": json.dumps(activations, **compact)} if activations else {})})
    bops = artifact_bops(spec, plan, activation_bits)
    size = model_packed_size(spec.model, plan)
    data_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    with staged_dir(out) as stage:
        weights_path = atomic_write_bytes(stage / WEIGHTS_FILE, blob)
        plan_path = plan.save(stage / PLAN_FILE)
        manifest = {"format": ARTIFACT_FORMAT, "model": spec.name, "target": model_target(target or plan.model),
                    "source_fingerprint": state_fingerprint(spec.model), "plan_sha256": file_sha256(plan_path),
                    "weights_sha256": file_sha256(weights_path), "file_bytes": weights_path.stat().st_size,
                    "data_bytes": data_bytes, "code_bytes": code_bytes, "scale_bytes": scale_bytes,
                    "other_bytes": data_bytes - code_bytes - scale_bytes, "buffer_bytes": buffer_bytes,
                    "packed_bits": size.total_bits,
                    "fp32_bits": size.fp32_bits, "packed_ratio": size.ratio,
                    "activations": None if activations is None else
                    {k: v for k, v in activations.items() if k != "layers"} | {"inputs": len(grids)},
                    "bops": bops, "provenance": _provenance(spec, plan)}
        atomic_write_text(stage / MANIFEST_FILE, json.dumps(manifest, indent=1, allow_nan=False) + "\n")
    return ArtifactInfo(directory=out, size=size, file_bytes=manifest["file_bytes"], data_bytes=data_bytes,
                        buffer_bytes=buffer_bytes, code_bytes=code_bytes, scale_bytes=scale_bytes, activations=grids,
                        bops=bops)


def _calibrate(model: nn.Module, spec: ModelSpec, plan: Plan, bits: int, observer: str) -> dict[str, Any]:
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
    from cetopt import __version__

    meta = {k: v for k, v in spec.metadata.items() if isinstance(v, (str, int, float, bool))}
    return {"cetopt": __version__, "torch": torch.__version__, "data": spec.data, "problem": plan.problem,
            "solver": plan.extra.get("solver"), "model_metadata": meta}


_HEX64 = frozenset("0123456789abcdef")


def _field(manifest: Mapping[str, Any], key: str, kind: str) -> Any:
    value = manifest.get(key)
    if kind == "hash":
        ok = isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64
    elif kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif kind == "positive":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
    elif kind == "string":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, dict)
    if not ok:
        want = {"hash": "a SHA-256 (64 hex digits)", "count": "an integer >= 0", "positive": "a positive number",
                "string": "a string", "object": "an object"}[kind]
        raise ProblemError(f"expected {want}, got {value!r:.60}; the manifest is damaged or was edited",
                           field=f"{MANIFEST_FILE}.{key}")
    return value


MANIFEST_FIELDS = {"model": "string", "target": "string", "source_fingerprint": "hash", "plan_sha256": "hash",
                   "weights_sha256": "hash", "file_bytes": "count", "data_bytes": "count", "buffer_bytes": "count",
                   "packed_bits": "count", "fp32_bits": "count", "packed_ratio": "positive", "provenance": "object"}


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """DIR's manifest, checked: format, every field's type and range, the sizes consistent with each other,
    model.safetensors and plan.json present, of the recorded size and SHA-256.

    Raises:
        ProblemError: not an artefact, a field missing / of the wrong type / inconsistent, a file changed.
    """
    from cetopt.inputs import load_json_file

    directory = Path(directory)
    if not (directory / MANIFEST_FILE).exists():
        raise ProblemError(f"{directory} is not a cetopt artefact (no {MANIFEST_FILE}); write one with "
                           "`cetopt apply PLAN --model SPEC --out DIR`", field="artifact")
    manifest = load_json_file(directory / MANIFEST_FILE, "manifest")  # bounded, regular file, checked JSON
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ProblemError(f"{directory / MANIFEST_FILE} is not a {ARTIFACT_FORMAT} manifest", field="format")
    for key, kind in MANIFEST_FIELDS.items():
        _field(manifest, key, kind)
    if manifest["buffer_bytes"] > manifest["data_bytes"] or \
            manifest["data_bytes"] != -(-manifest["packed_bits"] // 8) or manifest["fp32_bits"] < 1 or \
            abs(manifest["packed_ratio"] * max(manifest["packed_bits"], 1) / manifest["fp32_bits"] - 1) > 1e-9:
        raise ProblemError("packed_bits, data_bytes, buffer_bytes, fp32_bits and packed_ratio disagree; the manifest "
                           "is damaged or was edited", field=f"{MANIFEST_FILE}.packed_bits")
    for name, key in ((WEIGHTS_FILE, "weights_sha256"), (PLAN_FILE, "plan_sha256")):
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise ProblemError(f"{path} is missing or not a regular file", field="artifact")
        if name == WEIGHTS_FILE and path.stat().st_size != manifest["file_bytes"]:
            raise ProblemError(f"{path} is {path.stat().st_size} bytes, the manifest says {manifest['file_bytes']} "
                               "(truncated or replaced)", field="artifact")
        if file_sha256(path) != manifest[key]:
            raise ProblemError(f"{path} does not match the manifest's SHA-256 (changed or truncated)", field="artifact")
    return manifest


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


def _read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """model.safetensors' tensors (unbundled) and layout; a damaged file is a ProblemError, not a traceback."""
    from safetensors import safe_open

    from cetopt.inputs import parse_json

    path = directory / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            layout = parse_json(meta.get("layout", "{}"), f"{WEIGHTS_FILE} metadata 'layout'")
            index = parse_json(meta.get("index", "{}"), f"{WEIGHTS_FILE} metadata 'index'")
            flat = {key: handle.get_tensor(key) for key in handle.keys()}
    except ProblemError:
        raise
    except Exception as err:  # safetensors' own error type for a truncated or malformed file, OSError, ...
        raise ProblemError(f"{path} is not a readable safetensors file ({type(err).__name__}: {str(err)[:200]})",
                           field="artifact") from None
    if not isinstance(layout, dict) or not isinstance(index, dict):
        raise ProblemError(f"{WEIGHTS_FILE}: its metadata 'layout' and 'index' must be objects", field="artifact")
    return unbundle(flat, index), layout


def read_packed(directory: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """DIR/model.safetensors as stored: (tensor name -> tensor, unbundled; planned layer -> its layout)."""
    return _read_weights(Path(directory))


def _verify_source(directory: Path, spec: ModelSpec, plan: Plan, manifest: Mapping[str, Any],
                   tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> None:
    """The artefact is exactly what ``plan`` gives on ``spec.model``: same source weights (fingerprint), and
    every stored tensor, layout entry and size re-derived from the source and compared."""
    if manifest["source_fingerprint"] != state_fingerprint(spec.model):
        raise ProblemError(f"{directory} was made from other weights than those of {spec.name!r} (fingerprints "
                           "differ); evaluate it with the --model it was applied to", field="model")
    quadrics = plan_quadrics(spec, plan)
    expected, expected_layout, buffer_bytes, _, _ = _pack(spec, plan, quadrics, plan_grams(spec, plan, quadrics))
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
    tensors, layout = _read_weights(directory)
    _check_layers(spec.model, plan)
    if verify:
        _verify_source(directory, spec, plan, manifest, tensors, layout)
    model, weights = _unpacked(spec.model, plan, tensors, layout)
    grids = _recorded_activations(directory, manifest, plan)
    if verify and grids:
        _verify_activations(directory, model, spec, plan, grids, manifest["activations"]["observer"])
    return CompressedModel(model=model, plan=plan, manifest=manifest, weights=weights, activations=grids)


def _unpacked(source: nn.Module, plan: Plan, tensors: Mapping[str, torch.Tensor],
              layout: Mapping[str, Any]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``source`` holding the stored tensors and the planned layers' decoded weights (and those)."""
    model = copy.deepcopy(source)
    modules = _check_layers(model, plan)
    weights = {}
    for name in plan.layers:
        if name not in layout:
            raise ProblemError(f"{WEIGHTS_FILE} has no packed layer {name!r}", field="layout")
        target = modules[name]
        try:
            decoded = unpack_layer(tensors, layout[name], name)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise ProblemError(f"{WEIGHTS_FILE}: packed layer {name!r} is malformed ({type(err).__name__}: "
                               f"{str(err)[:120]})", field=f"layout.{name}") from None
        if tuple(decoded.shape) != tuple(target.shape):
            raise ProblemError(f"packed weight {tuple(decoded.shape)} for a layer of shape {tuple(target.shape)}",
                               field=f"layers.{name}")
        weights[name] = decoded.to(target.dtype)
    state = model.state_dict()
    layer_of = {weight_key(model, name): name for name in plan.layers}  # state-dict key -> planned layer
    missing = [k for k in state if k not in tensors and k not in layer_of]
    if missing:
        raise ProblemError(f"{WEIGHTS_FILE} lacks {missing[:3]}: not an artefact of this model", field="model")
    with torch.no_grad():
        try:
            for key, value in state.items():
                value.copy_(tensors[key] if key in tensors else weights[layer_of[key]])
        except RuntimeError as err:
            raise ProblemError(f"{WEIGHTS_FILE}: a tensor does not fit the model ({str(err)[:160]})",
                               field="model") from None
    return model, weights


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
    again = _calibrate(model, spec, plan, next(iter(grids.values())).bits, observer)
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

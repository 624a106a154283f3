"""Compressed-model artefacts: what ``cetopt apply PLAN --model SPEC --out DIR`` writes and ``cetopt evaluate
DIR`` reads back.

DIR holds
- ``model.safetensors``: each planned layer's packed integer codes and float32 scales (offsets, low-rank
  factors, series terms; cetopt.quant.pack), every other parameter and buffer as it was, concatenated per
  dtype (:func:`bundle`: a small header); the index and the layout of the packed parts in its metadata;
- ``plan.json``: the plan (cetopt.plan/2);
- ``manifest.json``: format, model target, fingerprints (SHA-256 of the source weights, of the plan and of
  model.safetensors), the predicted packed size next to the file's bytes, cetopt and torch versions.

:func:`load_compressed` unpacks DIR into a copy of the spec's model; :func:`evaluate_artifact` measures it
through cetopt.measure. Files are written atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cetopt._atomic import atomic_write_text
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
    """``target`` with a ``file.py:function`` path made absolute (so ``evaluate`` finds it from anywhere)."""
    module, sep, function = target.rpartition(":")
    if sep and module.endswith(".py") and Path(module).is_file():
        return f"{Path(module).resolve()}:{function}"
    return target


def _layers_needing(plan: Plan, what: str) -> list[str]:
    from cetopt.quant.rounding import rounding_needs

    return [n for n, c in plan.layers.items() if what in rounding_needs(c.rounding)]


def plan_grams(spec: ModelSpec, plan: Plan) -> dict[str, Any] | None:
    """Layer-input Gram matrices for the plan's layers rounded by adaround or gptq, on the spec's calibration
    batches: the same function and data the problem's candidates were rounded with, so the codes match."""
    from cetopt.builders.second_order import rounding_grams

    names = _layers_needing(plan, "gram")
    if not names:
        return None
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
    """

    directory: Path
    size: PackedSize
    file_bytes: int
    data_bytes: int
    buffer_bytes: int

    @property
    def predicted_bytes(self) -> int:
        """The packed size in bytes: what the tensors in the file add up to."""
        return self.size.total_bytes


def _check_layers(model: nn.Module, plan: Plan) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in plan.layers if n not in modules or not isinstance(getattr(modules[n], "weight", None),
                                                                            torch.Tensor)]
    if missing:
        raise ProblemError(f"the plan names layers the model lacks: {missing[:5]}; was it made for another model?",
                           field="layers")
    return modules


def write_artifact(spec: ModelSpec, plan: Plan, out: str | os.PathLike[str], *, target: str | None = None,
                   quadrics: Mapping[str, Any] | None = None, grams: Mapping[str, Any] | None = None) -> ArtifactInfo:
    """Compress ``spec.model`` by ``plan`` and write DIR (see the module docstring)."""
    from safetensors.torch import save

    from cetopt.fingerprint import check_fingerprint

    modules = _check_layers(spec.model, plan)
    check_fingerprint(plan.extra, spec, what="plan", layers=[n for n in plan.layers])
    if quadrics is None:
        quadrics = plan_quadrics(spec, plan)
    if grams is None:
        grams = plan_grams(spec, plan)
    from cetopt.quant.rounding.base import RoundingContext

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    for name, choice in plan.layers.items():
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=(grams or {}).get(name))
        packed = compress_layer(modules[name].weight, choice, plan.quantizer_of(name), context=context, name=name)
        tensors.update(packed.tensors)
        layout[name] = packed.layout
    planned = {f"{name}.weight" for name in plan.layers}
    params = {n for n, _ in spec.model.named_parameters()}
    buffer_bytes = 0
    for key, value in spec.model.state_dict().items():
        if key not in planned:
            tensors[key] = value.detach().cpu().contiguous().clone()
            buffer_bytes += 0 if key in params else value.numel() * value.element_size()
    flat, index = bundle(tensors)
    compact = {"separators": (",", ":")}
    blob = save(flat, metadata={"format": ARTIFACT_FORMAT, "layout": json.dumps(layout, **compact),
                                "index": json.dumps(index, **compact)})
    weights_path = out / WEIGHTS_FILE
    tmp = out / f".{WEIGHTS_FILE}.tmp{os.getpid()}"
    tmp.write_bytes(blob)
    os.replace(tmp, weights_path)
    plan_path = plan.save(out / PLAN_FILE)
    size = model_packed_size(spec.model, plan)
    data_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    manifest = {"format": ARTIFACT_FORMAT, "model": spec.name, "target": model_target(target or plan.model),
                "source_fingerprint": state_fingerprint(spec.model), "plan_sha256": file_sha256(plan_path),
                "weights_sha256": file_sha256(weights_path), "file_bytes": weights_path.stat().st_size,
                "data_bytes": data_bytes, "buffer_bytes": buffer_bytes, "packed_bits": size.total_bits,
                "fp32_bits": size.fp32_bits, "packed_ratio": size.ratio, "provenance": _provenance(spec, plan)}
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1, allow_nan=False) + "\n")
    return ArtifactInfo(directory=out, size=size, file_bytes=manifest["file_bytes"], data_bytes=data_bytes,
                        buffer_bytes=buffer_bytes)


def _provenance(spec: ModelSpec, plan: Plan) -> dict[str, Any]:
    from cetopt import __version__

    meta = {k: v for k, v in spec.metadata.items() if isinstance(v, (str, int, float, bool))}
    return {"cetopt": __version__, "torch": torch.__version__, "data": spec.data, "problem": plan.problem,
            "solver": plan.extra.get("solver"), "model_metadata": meta}


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """DIR's manifest (checked: format, files present, weights unchanged since they were written)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except OSError as err:
        raise ProblemError(f"{directory} is not a cetopt artefact ({MANIFEST_FILE}: {err.strerror}); write one with "
                           "`cetopt apply PLAN --model SPEC --out DIR`", field="artifact") from None
    except ValueError as err:
        raise ProblemError(f"{directory / MANIFEST_FILE} is not valid JSON ({err})", field="artifact") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ProblemError(f"{directory / MANIFEST_FILE} is not a {ARTIFACT_FORMAT} manifest", field="format")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ProblemError(f"{weights} is missing", field="artifact")
    if file_sha256(weights) != manifest.get("weights_sha256"):
        raise ProblemError(f"{weights} does not match the manifest's SHA-256 (changed or truncated)", field="artifact")
    return manifest


@dataclass(frozen=True)
class CompressedModel:
    """An artefact unpacked into a torch model.

    Attributes:
        model: the spec's architecture with the artefact's weights (floating point, decoded).
        plan: the plan it was made with.
        manifest: DIR's manifest.
        weights: planned layer -> its decoded weight (what cetopt.measure.Measurer swaps in).
    """

    model: nn.Module
    plan: Plan
    manifest: Mapping[str, Any]
    weights: Mapping[str, torch.Tensor]


def load_compressed(directory: str | os.PathLike[str], spec: ModelSpec) -> CompressedModel:
    """Unpack DIR into a copy of ``spec.model`` (every state-dict entry comes from the artefact)."""
    from safetensors import safe_open

    directory = Path(directory)
    manifest = read_manifest(directory)
    plan = Plan.load(directory / PLAN_FILE)
    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as handle:
        meta = handle.metadata() or {}
        layout, index = json.loads(meta.get("layout", "{}")), json.loads(meta.get("index", "{}"))
        tensors = unbundle({key: handle.get_tensor(key) for key in handle.keys()}, index)
    model = copy.deepcopy(spec.model)
    modules = _check_layers(model, plan)
    weights = {}
    for name in plan.layers:
        if name not in layout:
            raise ProblemError(f"{WEIGHTS_FILE} has no packed layer {name!r}", field="layout")
        target = modules[name].weight
        decoded = unpack_layer(tensors, layout[name], name)
        if tuple(decoded.shape) != tuple(target.shape):
            raise ProblemError(f"packed weight {tuple(decoded.shape)} for a layer of shape {tuple(target.shape)}",
                               field=f"layers.{name}")
        weights[name] = decoded.to(target.dtype)
    state = model.state_dict()
    missing = [k for k in state if k not in tensors and k.removesuffix(".weight") not in plan.layers]
    if missing:
        raise ProblemError(f"{WEIGHTS_FILE} lacks {missing[:3]}: not an artefact of this model", field="model")
    with torch.no_grad():
        for key, value in state.items():
            value.copy_(tensors[key] if key in tensors else weights[key.removesuffix(".weight")])
    return CompressedModel(model=model, plan=plan, manifest=manifest, weights=weights)


def evaluate_artifact(directory: str | os.PathLike[str], spec: ModelSpec) -> dict[str, Any]:
    """Load DIR into ``spec``'s model and measure it (metrics, calibration loss change) beside the sizes.

    Raises:
        ProblemError: the artefact was made from other weights than ``spec.model``'s (fingerprints differ),
            so the change it measures would be meaningless.
    """
    from cetopt.measure import Measurer

    loaded = load_compressed(directory, spec)
    if loaded.manifest.get("source_fingerprint") != state_fingerprint(spec.model):
        raise ProblemError(f"{directory} was made from other weights than those of {spec.name!r} (fingerprints "
                           "differ); evaluate it with the --model it was applied to", field="model")
    measurer = Measurer(spec)
    measured = measurer.measure(loaded.weights)
    m = loaded.manifest
    return {"model": spec.name, "metric_name": measured.metric_name, "metric": measured.metric,
            "fp_metric": measurer.fp_metrics.get(measured.metric_name) if measured.metric_name else None,
            "metrics": dict(measured.metrics), "calibration_dloss": measured.calibration_dloss,
            "validation_dloss": measured.validation_dloss, "file_bytes": m["file_bytes"],
            "packed_bytes": -(-m["packed_bits"] // 8), "buffer_bytes": m["buffer_bytes"],
            "header_bytes": m["file_bytes"] - m["data_bytes"],
            "packed_ratio": m["packed_ratio"], "layers": len(loaded.plan.layers)}

"""The artefact's files: their names, SHA-256 fingerprints, the per-dtype bundling of model.safetensors, the
manifest's fields and the readers that check them, and unpacking the stored tensors into a model (the format is
docs/artifact-format.md)."""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cetopt.curvature.layers import weight_key
from cetopt.errors import ProblemError
from cetopt.quant.pack import PackedSize, unpack_layer
from cetopt.quant.plan import Plan


ARTIFACT_FORMAT = "cetopt.artifact/1"


WEIGHTS_FILE, PLAN_FILE, MANIFEST_FILE = "model.safetensors", "plan.json", "manifest.json"


ARTIFACT_FILES = frozenset((WEIGHTS_FILE, PLAN_FILE, MANIFEST_FILE))


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


def plan_weights(model: nn.Module, plan: Plan) -> dict[str, nn.Parameter]:
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


_HEX64 = frozenset("0123456789abcdef")

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


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
    return read_weights(Path(directory))


def unpacked_model(source: nn.Module, plan: Plan, tensors: Mapping[str, torch.Tensor],
                   layout: Mapping[str, Any]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``source`` holding the stored tensors and the planned layers' decoded weights (and those)."""
    model = copy.deepcopy(source)
    modules = plan_weights(model, plan)
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

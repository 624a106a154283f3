"""docs/artifact-format.md is enough to read an artefact: a reader written from it with numpy and the
`safetensors` package alone (no cetopt import) decodes every plan kind to exactly cetopt.load_compressed's
state dict, and the manifest's size vocabulary adds up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from test_artifact import PLANS, signed, small_spec  # noqa: E402

from cetopt.artifact import load_compressed, write_artifact  # noqa: E402
from cetopt.quant.plan import LayerChoice, Plan  # noqa: E402


def read_artifact(directory: Path) -> dict[str, np.ndarray]:
    """The state dict of an artefact, from docs/artifact-format.md alone (numpy + safetensors)."""
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="np") as handle:
        meta = handle.metadata()
        flat = {k: handle.get_tensor(k) for k in handle.keys()}
    assert meta["format"] == "cetopt.artifact/1"
    tensors = {}
    for dtype, entries in json.loads(meta["index"]).items():
        for name, (shape, start) in entries.items():
            tensors[name] = flat[f"bundle.{dtype}"][start:start + math.prod(shape)].reshape(shape)

    def part(prefix: str, p: dict) -> np.ndarray:
        n, b, rows = math.prod(p["shape"]), p["bits"], p["rows"]
        bits = np.unpackbits(tensors[f"{prefix}.codes"], count=n * b, bitorder="little").reshape(n, b)
        code = (bits.astype(np.int64) @ (np.int64(1) << np.arange(b))).reshape(rows, n // rows).astype(np.float64)
        scale = tensors[f"{prefix}.scale"].astype(np.float64)[:, None]
        if p["symmetric"]:
            value = ((2 * code - 1) if b == 1 else (code - (2 ** (b - 1) - 1))) * scale
        else:
            value = code * scale + tensors[f"{prefix}.offset"].astype(np.float64)[:, None]
        return value.reshape(p["shape"])

    state = {k: v for k, v in tensors.items() if not any(k.startswith(f"{layer}.weight.")
                                                         for layer in json.loads(meta["layout"]))}
    for layer, lay in json.loads(meta["layout"]).items():
        prefix, parts = f"{layer}.weight", lay["parts"]
        if lay["rank"] is not None:
            a, b = ((part(f"{prefix}.{k}", parts[k]) if parts else tensors[f"{prefix}.{k}"].astype(np.float64))
                    for k in ("a", "b"))
            weight = (a @ b).reshape(lay["shape"])
        else:
            weight = np.zeros(lay["shape"])
            for k in sorted(parts, key=lambda k: int(k[1:])):
                weight = weight + part(f"{prefix}.{k}", parts[k])
        state[prefix] = weight.astype(np.float32)
    return state


PLANS_HERE = {**PLANS, "one-bit": Plan(layers={"0": LayerChoice(1), "4": LayerChoice(4, terms=2)})}


@pytest.mark.parametrize("name", sorted(PLANS_HERE))
def test_numpy_reader_matches_load_compressed(tmp_path: Path, name: str) -> None:
    spec = small_spec()
    info = write_artifact(spec, signed(PLANS_HERE[name], spec), tmp_path / "art")
    mine = read_artifact(tmp_path / "art")
    theirs = load_compressed(tmp_path / "art", spec).model.state_dict()
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        assert np.array_equal(mine[key], value.numpy()) and mine[key].dtype == value.numpy().dtype, key
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["code_bytes"] + manifest["scale_bytes"] + manifest["other_bytes"] == manifest["data_bytes"]
    assert manifest["data_bytes"] * 8 == manifest["packed_bits"] and info.overhead_bytes > 0
    floats = sum(t.numel() * 4 for k, t in spec.model.state_dict().items()
                 if k.removesuffix(".weight") not in PLANS_HERE[name].layers and t.dtype == torch.float32)
    assert manifest["other_bytes"] >= floats  # every unplanned float tensor is an "other parameter"


@pytest.mark.parametrize("name", sorted(PLANS_HERE))
def test_predicted_size_parts_are_the_written_ones(tmp_path: Path, name: str) -> None:
    """cetopt.quant.pack's codes / scales / other split (what `cetopt plan` prints) is what apply writes."""
    from cetopt.quant.pack import model_packed_size

    spec = small_spec()
    info = write_artifact(spec, signed(PLANS_HERE[name], spec), tmp_path / "art")
    size = model_packed_size(spec.model, PLANS_HERE[name])
    assert (size.code_bits, size.scale_bits, size.rest_bits) == (8 * info.code_bytes, 8 * info.scale_bytes,
                                                                 8 * info.other_bytes)


def test_numpy_reader_reads_the_activation_grids(tmp_path: Path) -> None:
    """The activation record of docs/artifact-format.md, read with json + safetensors: the grids load_compressed
    returns, and the documented formula gives scale and zero point from the recorded range."""
    from safetensors import safe_open

    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "art", activation_bits=8, observer="percentile")
    with safe_open(str(tmp_path / "art" / "model.safetensors"), framework="np") as handle:
        record = json.loads(handle.metadata()["activations"])
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["activations"] == {k: record[k] for k in ("bits", "observer", "calibration_batches")} | \
        {"inputs": len(record["layers"])}
    theirs = load_compressed(tmp_path / "art", spec).activations
    assert set(record["layers"]) == set(theirs) == {"0", "4"}
    for layer, g in record["layers"].items():
        assert (np.float32(g["scale"]), g["zero_point"]) == (np.float32(theirs[layer].scale), theirs[layer].zero_point)
        scale = np.float32((g["high"] - g["low"]) / (2 ** g["bits"] - 1))
        assert g["low"] <= 0 <= g["high"] and scale == np.float32(g["scale"])
        assert g["zero_point"] == round(-g["low"] / ((g["high"] - g["low"]) / (2 ** g["bits"] - 1)))

"""``cetopt apply --activation-bits``: the artefact records per-tensor input grids (manifest + safetensors
metadata), evaluate runs it with those inputs fake-quantised, export reuses the recorded grids, and the BOPs
the artefact reports agree with the plan's when the activation bits agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from test_artifact import PLANS, signed, small_spec  # noqa: E402

from cetopt.artifact import MANIFEST_FILE, WEIGHTS_FILE, evaluate_artifact, file_sha256, load_compressed, write_artifact  # noqa: E402,E501
from cetopt.errors import ProblemError  # noqa: E402
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer  # noqa: E402
from cetopt.quant.activations import grid_for  # noqa: E402
from cetopt.quant.plan import plan_from_choices  # noqa: E402


def hooked_ranges(model: torch.nn.Module, batches: list) -> dict[str, tuple[float, float]]:
    """Min/max of the inputs of layers "0" (conv) and "4" (linear) over the batches, by hand."""
    with torch.no_grad():
        rows = [(float(x.min()), float(x.max()), model[3](model[2](model[1](model[0](x))))) for x, _ in batches]
    flat = torch.cat([r[2] for r in rows])
    return {"0": (min(r[0] for r in rows), max(r[1] for r in rows)), "4": (float(flat.min()), float(flat.max()))}


def quantised_forward(model: torch.nn.Module, x: torch.Tensor, grids: dict) -> torch.Tensor:
    """The model with its two layers' inputs quantised and dequantised by hand (numpy's half-to-even round)."""
    def fq(t: torch.Tensor, name: str) -> torch.Tensor:
        g = grids[name]
        s = np.float32(g.scale)
        q = np.clip(np.round(t.numpy() / s) + g.zero_point, 0, 2 ** g.bits - 1)
        return torch.from_numpy(((q - g.zero_point) * s).astype(np.float32))
    with torch.no_grad():
        h = model[3](model[2](model[1](model[0](fq(x, "0")))))
        return model[4](fq(h, "4"))


def test_apply_records_the_grids_and_evaluate_uses_them(tmp_path: Path) -> None:
    spec = small_spec()
    plan = signed(PLANS["plain"], spec)
    info = write_artifact(spec, plan, tmp_path / "a8", activation_bits=8)
    loaded = load_compressed(tmp_path / "a8", spec)
    ranges = hooked_ranges(loaded.model, spec.calibration)
    want = {n: grid_for(n, *ranges[n], 8) for n in ranges}
    assert dict(info.activations) == dict(loaded.activations) == want
    manifest = json.loads((tmp_path / "a8" / MANIFEST_FILE).read_text())
    assert manifest["activations"] == {"bits": 8, "observer": "minmax", "calibration_batches": 2, "inputs": 2}
    # the packed size is the weights'; the grids live in the header (container overhead)
    plain = write_artifact(spec, plan, tmp_path / "w")
    assert info.data_bytes == plain.data_bytes and info.overhead_bytes > plain.overhead_bytes
    report = evaluate_artifact(tmp_path / "a8", spec)
    x = torch.cat([b[0] for b in spec.calibration])  # small_spec's evaluation data
    agreement = float((quantised_forward(loaded.model, x, want).argmax(1) == spec.model(x).argmax(1)).float().mean())
    assert report["metric"] == agreement and report["activations"]["inputs"] == 2
    losses = [float(torch.nn.functional.cross_entropy(quantised_forward(loaded.model, b[0], want), b[1]))
              - float(spec.loss_fn(spec.model, b).detach()) for b in spec.calibration]
    assert report["calibration_dloss"] == pytest.approx(float(np.mean(losses)), rel=1e-5, abs=1e-7)
    assert evaluate_artifact(tmp_path / "w", spec)["calibration_dloss"] != pytest.approx(report["calibration_dloss"])


def test_an_edited_grid_is_refused_even_when_rehashed(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "a", activation_bits=8)
    path = tmp_path / "a" / WEIGHTS_FILE
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    record = json.loads(meta["activations"])
    record["layers"]["4"]["high"] *= 2
    record["layers"]["4"]["scale"] = float(np.float32(record["layers"]["4"]["scale"] * 2))
    save_file(load_file(str(path)), str(path), metadata={**meta, "activations": json.dumps(record)})
    manifest = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    manifest.update(weights_sha256=file_sha256(path), file_bytes=path.stat().st_size)
    (tmp_path / "a" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ProblemError, match="activation grid of '4'"):
        load_compressed(tmp_path / "a", spec)
    load_compressed(tmp_path / "a", spec, verify=False)  # unverified: read as stored
    manifest["activations"] = None  # the summary dropped: the grids in the file no longer match it
    (tmp_path / "a" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ProblemError, match="activations and model.safetensors's disagree"):
        load_compressed(tmp_path / "a", spec, verify=False)


def small_problem(activation_bits: int) -> AllocationProblem:
    """small_spec's two layers with their MACs per sample counted by hand: the conv makes 8 x 6 x 6 outputs of
    3 x 3 x 3 MACs, the linear 10 outputs of 288."""
    macs = {"0": 8 * 6 * 6 * 27, "4": 10 * 288}
    layers = tuple(Layer(name=n, params=p, macs=macs[n], choices=(Choice(bits=3, loss=1.0), Choice(bits=4, loss=0.5)))
                   for n, p in (("0", 216), ("4", 2880)))
    return AllocationProblem(name="small", layers=layers, budget=Budget(avg_bits=4), activation_bits=activation_bits)


def test_the_plans_bops_and_the_artefacts_agree_at_the_same_activation_bits(tmp_path: Path) -> None:
    spec = small_spec()
    by_hand = 8 * 6 * 6 * 27 * 4 + 10 * 288 * 3  # macs x weight bits, times the activation bits below
    for assumed in (8, 4):
        plan = signed(plan_from_choices(small_problem(assumed), {"0": 1, "4": 0}), spec)
        assert plan.extra["bops"] == by_hand * assumed and plan.extra["activation_bits"] == assumed
        info = write_artifact(spec, plan, tmp_path / f"a{assumed}", activation_bits=assumed)
        assert info.bops == {"activation_bits": assumed, "total": by_hand * assumed, "plan_activation_bits": assumed,
                             "plan_total": by_hand * assumed}
        assert json.loads((tmp_path / f"a{assumed}" / MANIFEST_FILE).read_text())["bops"] == info.bops
    weights_only = write_artifact(spec, plan, tmp_path / "w")
    assert weights_only.bops["total"] == by_hand * 32 and weights_only.bops["activation_bits"] == 32
    with pytest.raises(ProblemError, match="--activation-bits"):
        write_artifact(spec, plan, tmp_path / "bad", activation_bits=6)


def test_cli_extract_apply_evaluate_export_with_activation_bits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    """The width the problem's BOPs assume is a flag of extract, recorded in the plan; apply at that width
    prints BOPs equal to the plan's, weights only says what the plan assumed; evaluate and export use the grids."""
    import re

    from cetopt.cli import main
    from cetopt.quant.plan import Plan

    (tmp_path / "small_model.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_artifact import small_spec\n\ndef spec():\n    return small_spec()\n"
        % str(Path(__file__).parent))
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "small_model.py:spec", "--bits", "2,4,8", "--avg-bits", "4", "--activation-bits", "4",
                 "--out", "p.json"]) == 0
    assert json.loads(Path("p.json").read_text())["activation_bits"] == 4
    assert main(["solve", "p.json", "--solver", "dp", "--out", "solved.json"]) == 0
    plan = Plan.load("solved.json")
    assert plan.extra["activation_bits"] == 4 and plan.extra["bops"] > 0
    capsys.readouterr()
    assert main(["apply", "solved.json", "--model", "small_model.py:spec", "--out", "a4", "--activation-bits", "4"]) == 0
    out = capsys.readouterr().out
    assert "2 layer inputs quantised to 4 bits" in out and "same activation bits" in out
    numbers = re.search(r"BOPs ([0-9.e+]+) per sample with 4-bit activations \(the plan's: ([0-9.e+]+)", out).groups()
    assert numbers[0] == numbers[1] == f"{plan.extra['bops']:.4g}"
    assert main(["apply", "solved.json", "--model", "small_model.py:spec", "--out", "w"]) == 0
    assert "float32 activations; the plan's" in capsys.readouterr().out
    assert main(["evaluate", "a4", "--model", "small_model.py:spec"]) == 0
    assert "2 layer inputs fake-quantised to 4 bits" in capsys.readouterr().out
    if pytest.importorskip("onnx") and pytest.importorskip("onnxruntime"):
        assert main(["export", "a4", "--model", "small_model.py:spec", "--out", "m.onnx"]) == 0
        out = capsys.readouterr().out
        assert "recorded in the artefact" in out
        assert "container padding 0 bytes" in out  # extracted at --bits 2,4,8: widths ONNX stores exactly

"""A spec with inputs only (no loss_fn, no labels) through the command line: extract -> plan -> apply -> evaluate
(and demo), with the fidelity objective built by cetopt and the evaluation reporting fidelity to FP32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cetopt.cli import main

pytest.importorskip("safetensors")

SPEC = '''
import torch
from cetopt import ModelSpec


def spec() -> ModelSpec:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    x = torch.randn(320, 8, generator=torch.Generator().manual_seed(1))
    return ModelSpec(name="inputs-only", model=model, calibration=[x[:64], x[64:128]], validation=[x[128:192]],
                     test=[x[192:]])
'''


def test_inputs_only_spec_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inputs_only.py").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CETOPT_CACHE_DIR", str(tmp_path / "cache"))
    target = "inputs_only.py:spec"
    assert main(["extract", target, "--bits", "2,4,8", "--avg-bits", "4", "--out", "problem.json"]) == 0
    problem = json.loads((tmp_path / "problem.json").read_text())
    metadata = problem["metadata"]
    assert metadata["objective"].startswith("fidelity: cetopt.losses.kl_to_reference")
    assert metadata["calibration_loss"] == pytest.approx(0.0, abs=1e-9)  # the objective's minimum: FP32 itself
    assert all(c["loss"] >= 0 for layer in problem["layers"] for c in layer["choices"])
    assert main(["plan", target, "--bits", "2,4,8", "--avg-bits", "4", "--out", "plan.json"]) == 0
    assert json.loads((tmp_path / "plan.json").read_text())["extra"]["selection"]["split"] == "validation"
    assert main(["apply", "plan.json", "--model", target, "--out", "packed"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "packed", "--model", target, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric_name"] == "agreement" and report["fp_metric"] == 1.0
    assert set(report["metrics"]) == {"agreement", "kl", "cosine", "mse"}
    assert 0.5 < report["metric"] <= 1.0 and report["metrics"]["kl"] > 0  # 4 bits: close to, not equal to, FP32
    assert report["calibration_dloss"] >= 0 and report["validation_dloss"] >= 0
    assert main(["evaluate", "packed", "--model", target]) == 0
    assert "also: kl " in capsys.readouterr().out
    assert main(["demo", target, "--avg-bits", "4"]) == 0
    assert "(whole plan)" in capsys.readouterr().out

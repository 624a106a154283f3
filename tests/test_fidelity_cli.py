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


TASK_SPEC = '''
import torch
import torch.nn.functional as F
from cetopt import ModelSpec


def spec() -> ModelSpec:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1).detach()
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
    return ModelSpec(name="labelled", model=model, calibration=batches[:2], validation=batches[2:3],
                     loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                     evaluate=lambda m: {"acc": float((m(x[192:]).argmax(1) == y[192:]).double().mean())})
'''


def test_objective_fidelity_on_a_labelled_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--objective fidelity` drops the labels of a task spec; the plan records it and apply/evaluate follow it
    (the fingerprint of the fidelity batches matches), while the task objective stays the default."""
    (tmp_path / "labelled.py").write_text(TASK_SPEC)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CETOPT_CACHE_DIR", str(tmp_path / "cache"))
    target = "labelled.py:spec"
    assert main(["extract", target, "--bits", "2,4,8", "--avg-bits", "4", "--out", "task.json"]) == 0
    assert main(["extract", target, "--bits", "2,4,8", "--avg-bits", "4", "--objective", "fidelity",
                 "--out", "fidelity.json"]) == 0
    task = json.loads((tmp_path / "task.json").read_text())["metadata"]
    fidelity = json.loads((tmp_path / "fidelity.json").read_text())["metadata"]
    assert task["objective"].startswith("loss_fn") and "objective_kind" not in task
    assert fidelity["objective"].startswith("fidelity: cetopt.losses.kl_to_reference")
    assert fidelity["calibration_loss"] == pytest.approx(0.0, abs=1e-9)
    assert fidelity["fingerprint_calibration"] != task["fingerprint_calibration"]  # the labels are gone from the batches
    assert main(["plan", target, "--bits", "2,4,8", "--avg-bits", "4", "--objective", "fidelity",
                 "--out", "plan.json"]) == 0
    assert json.loads((tmp_path / "plan.json").read_text())["extra"]["objective_kind"] == "kl"
    assert main(["apply", "plan.json", "--model", target, "--out", "packed"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "packed", "--model", target, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric_name"] == "acc" and report["calibration_dloss"] >= 0
    pytest.importorskip("onnxruntime")
    assert main(["export", "packed", "--model", target, "--out", "m.onnx"]) == 0
    capsys.readouterr()
    # the artefact is found from the file and its plan's objective followed: the same calibration loss change
    assert main(["evaluate", "m.onnx", "--model", target, "--format", "json"]) == 0
    onnx_dloss = json.loads(capsys.readouterr().out)["calibration_dloss"]
    assert onnx_dloss == pytest.approx(report["calibration_dloss"], rel=1e-3, abs=1e-7)


def test_objective_flag_refuses_what_it_cannot_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--objective task on an inputs-only spec: exit 2 naming the flag; a dict batch without an inputs rule: the
    as_fidelity error names the fix."""
    from cetopt.errors import ProblemError
    from cetopt.modelspec import ModelSpec
    import torch

    (tmp_path / "inputs_only.py").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "inputs_only.py:spec", "--objective", "task", "--out", "p.json"]) == 2
    model = torch.nn.Linear(3, 2)
    spec = ModelSpec(name="dicts", model=model, calibration=[{"x": torch.zeros(2, 3)}],
                     loss_fn=lambda m, b: m(b["x"]).sum())
    with pytest.raises(ProblemError, match="as_fidelity\\(inputs="):
        spec.as_fidelity()
    converted = spec.as_fidelity(inputs=lambda b: b["x"])
    assert converted.fidelity and converted.as_fidelity() is converted

"""The digits-cnn zoo model (shipped weights, real test data) exported at mixed 2/3/4/8-bit weights: onnxruntime's
outputs equal the unpacked torch artefact's within 1e-4 relative, and its accuracy is the artefact's."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
pytest.importorskip("safetensors")

from cetopt.artifact import evaluate_artifact, write_artifact  # noqa: E402
from cetopt.export.onnx_eval import evaluate_onnx  # noqa: E402
from cetopt.export.onnx_export import export_onnx  # noqa: E402
from cetopt.modelspec import load_model_spec  # noqa: E402
from cetopt.quant.plan import Plan  # noqa: E402
from test_artifact import signed  # noqa: E402


def test_digits_cnn_onnx_matches_the_torch_artefact(tmp_path: Path) -> None:
    spec = load_model_spec("digits-cnn")
    plan = Plan(bits={"conv1": 8, "conv2": 3, "fc1": 2, "fc2": 4})
    write_artifact(spec, signed(plan, spec), tmp_path / "art")
    info = export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    assert info.storage == {"conv1": "int8", "conv2": "int4", "fc1": "int2", "fc2": "int4"}
    assert set(info.weight_error.values()) == {0.0}
    report = evaluate_onnx(tmp_path / "m.onnx", spec)
    assert report.compared_calls >= 1 and report.max_relative_error <= 1e-4
    assert report.argmax_agreement is not None and report.argmax_agreement >= 0.99
    torch_report = evaluate_artifact(tmp_path / "art", spec)  # independent: the torch artefact's own evaluation
    assert report.metrics["accuracy"] == pytest.approx(torch_report["metric"], abs=1.5 / 360)
    assert report.calibration_dloss == pytest.approx(torch_report["calibration_dloss"], abs=1e-4)

"""The README's pretrained section merges the combined results file with per-model ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cetopt.results import pretrained


def _ci(estimate: float) -> dict[str, float | str]:
    return {"estimate": estimate, "low": estimate - 0.01, "high": estimate + 0.01, "verdict": "better"}


def _write(path: Path, model: str, mean: float, default: str = "cet-shrink") -> None:
    comparison = {"model": model, "avg_bits": 4.0, "metric": "agreement", "n_test": 10, "mean": mean,
                  "method": default, "vs_hawq-v3": _ci(0.1), "vs_uniform": _ci(0.2)}
    path.write_text(json.dumps({"meta": {"default": default, "command": f"run {path.stem}"},
                                "comparisons": [comparison]}))


def test_a_per_model_file_adds_its_model_and_wins_over_the_combined_file(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    combined = tmp_path / "cost_models_pretrained.json"
    _write(combined, "minilm", 0.5)
    _write(tmp_path / "cost_models_pretrained_mobilenetv2.json", "mobilenetv2", 0.7)
    monkeypatch.setattr(pretrained, "RESULTS", combined)
    text = pretrained.pretrained_section()
    assert "| minilm | 4 | agreement | 10 | 50.00 |" in text
    assert "| mobilenetv2 | 4 | agreement | 10 | 70.00 |" in text
    assert "Not measured yet" not in text

    _write(tmp_path / "cost_models_pretrained_minilm.json", "minilm", 0.6)  # a newer, separate minilm run
    text = pretrained.pretrained_section()
    assert "| minilm | 4 | agreement | 10 | 60.00 |" in text and "50.00" not in text


def test_files_that_disagree_on_the_default_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    combined = tmp_path / "cost_models_pretrained.json"
    _write(combined, "minilm", 0.5)
    _write(tmp_path / "cost_models_pretrained_mobilenetv2.json", "mobilenetv2", 0.7, default="cet")
    monkeypatch.setattr(pretrained, "RESULTS", combined)
    with pytest.raises(ValueError, match="default cost model"):
        pretrained.pretrained_section()


def test_runs_on_another_quantiser_grid_stay_out_of_the_default_table(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    combined = tmp_path / "cost_models_pretrained.json"
    _write(combined, "minilm", 0.5)
    clipped = tmp_path / "cost_models_pretrained_mseclip.json"
    _write(clipped, "minilm", 0.9)
    data = json.loads(clipped.read_text())
    data["meta"]["clip"] = "mse"
    clipped.write_text(json.dumps(data))
    monkeypatch.setattr(pretrained, "RESULTS", combined)
    text = pretrained.pretrained_section()
    assert "| minilm | 4 | agreement | 10 | 50.00 |" in text and "90.00" not in text and "mseclip" not in text

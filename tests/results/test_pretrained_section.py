"""The README's pretrained section: the default cost model on the default grid, per-model files winning over the
combined one, and runs on another grid or without the default model kept out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cetopt.costmodels.registry import DEFAULT_COST_MODEL
from cetopt.results import pretrained
from cetopt.workflow import DEFAULT_QUANTIZER

OTHER_GRID = "none" if DEFAULT_QUANTIZER.clip == "mse" else "mse"


def _ci(estimate: float) -> dict[str, float | str]:
    return {"estimate": estimate, "low": estimate - 0.01, "high": estimate + 0.01, "verdict": "better"}


def _write(path: Path, model: str, mean: float, method: str = DEFAULT_COST_MODEL,
           clip: str = DEFAULT_QUANTIZER.clip) -> None:
    comparison = {"model": model, "avg_bits": 4.0, "metric": "agreement", "n_test": 10, "mean": mean,
                  "method": method, "vs_hawq-v3": _ci(0.1), "vs_uniform": _ci(0.2)}
    path.write_text(json.dumps({"meta": {"default": "whatever was the default then", "methods": [method],
                                         "clip": clip, "command": f"run {path.stem}"},
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
    assert "Not measured yet" not in text and f"`{DEFAULT_COST_MODEL}`" in text

    _write(tmp_path / "cost_models_pretrained_minilm.json", "minilm", 0.6)  # a newer, separate minilm run
    text = pretrained.pretrained_section()
    assert "| minilm | 4 | agreement | 10 | 60.00 |" in text and "50.00" not in text


def test_runs_without_the_default_model_or_on_another_grid_stay_out(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    combined = tmp_path / "cost_models_pretrained.json"
    _write(combined, "minilm", 0.5)
    _write(tmp_path / "cost_models_pretrained_other.json", "minilm", 0.9, clip=OTHER_GRID)
    _write(tmp_path / "cost_models_pretrained_old.json", "mobilenetv2", 0.8, method="cet")
    monkeypatch.setattr(pretrained, "RESULTS", combined)
    text = pretrained.pretrained_section()
    assert "| minilm | 4 | agreement | 10 | 50.00 |" in text and "90.00" not in text and "80.00" not in text
    assert "Not measured yet: mobilenetv2" in text


def test_packed_size_difference_is_relative_to_the_baseline() -> None:
    from cetopt.results.pretrained import _size_difference

    assert _size_difference(110, 100) == "+10.00%" and _size_difference(90, 100) == "-10.00%"
    assert _size_difference(100_000_000, 100_000_001) == "+0.00%"  # a rounding-level gap is not a signed size
    assert _size_difference(-1, 100) == "-" and _size_difference(None, 100) == "-"

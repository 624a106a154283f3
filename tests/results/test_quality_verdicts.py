"""The generated quality table says what its numbers say: a difference is a win only when its CI excludes 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cetopt.results.quality_sections as sections


def _seed(diff_hawq: float, diff_uniform: float, diff_cet: float) -> dict:  # type: ignore[type-arg]
    plan = {"test_accuracy": 0.9, "packed_ratio": 8.0, "bits": {"a": 3}}
    paired = {"cet-shrink-hawq-v3": {"estimate": diff_hawq, "verdict": "tie", "same_plan": False},
              "cet-shrink-uniform": {"estimate": diff_uniform, "verdict": "a", "same_plan": False},
              "cet-shrink-cet": {"estimate": diff_cet, "verdict": "tie", "same_plan": False},
              "cet-hawq-v3": {"estimate": -diff_hawq, "verdict": "tie", "same_plan": False}}
    return {"fp_accuracy": 0.95, "test_examples": 100, "fingerprint": {"fingerprint_weights": "w" * 64,
                                                                      "fingerprint_calibration": "c" * 64},
            "budgets": {"3": {"plans": {m: plan for m in ("cet-shrink", "cet", "hawq-v3", "uniform")},
                              "paired": paired}}}


def test_verdicts_follow_the_seed_level_intervals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"format": "cetopt.quality/2", "plan_methods": ["cet-shrink", "cet"], "avg_bits": [3.0],
            "candidate_bits": [2, 3, 4], "n_boot": 100,
            "environment": {"versions": {"torch": "x"}, "machine": "m", "threads": 1},
            "models": {"toy": {"seeds": {"0": _seed(0.01, 0.10, 0.02), "1": _seed(-0.01, 0.11, 0.03),
                                         "2": _seed(0.005, 0.09, 0.025)}}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(sections, "RESULTS", path)
    text = sections.quality_section()
    shrink_row = next(line for line in text.splitlines() if line.startswith("| toy | cet-shrink |"))
    assert "tie within CI" in shrink_row  # +1, -1, +0.5 points: the interval holds 0
    assert "cet-shrink ahead" in shrink_row  # +10, +11, +9 points vs uniform
    versus = next(line for line in text.splitlines() if line.startswith("| toy | 3 |"))
    assert "cet-shrink ahead" in versus and "+2.50" in versus  # against cet: +2, +3, +2.5 points

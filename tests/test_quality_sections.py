"""The generated quality table states a win only when its confidence interval excludes 0."""

from __future__ import annotations

import json

import pytest

from cetopt.results import quality_sections as qs


def _seed(diff: float, verdict: str, same: bool = False) -> dict:  # type: ignore[type-arg]
    plan = {"bits": {"a": 3}, "avg_bits": 3.0, "packed_ratio": 9.0, "test_accuracy": 0.9,
            "calibration_dloss": 0.01, "validation_dloss": 0.01}
    paired = {"estimate": diff, "low": diff - 0.01, "high": diff + 0.01, "verdict": verdict, "same_plan": same}
    return {"fingerprint": {"fingerprint_weights": "a" * 64, "fingerprint_layers": "b" * 64,
                            "fingerprint_calibration": "c" * 64}, "fp_accuracy": 0.95, "test_examples": 100,
            "budgets": {"3": {"plans": {"cet": plan, "hawq-v3": plan, "uniform": plan},
                              "paired": {"cet-hawq-v3": paired, "cet-uniform": paired}}}}


@pytest.mark.parametrize("diffs, word", [([0.05, 0.06, 0.05, 0.07, 0.06], "cet ahead"),
                                         ([0.05, -0.05, 0.02, -0.03, 0.0], "tie within CI"),
                                         ([-0.05, -0.06, -0.05, -0.07, -0.06], "HAWQ-V3 ahead")])
def test_claims_follow_the_seed_interval(tmp_path, monkeypatch, diffs, word) -> None:  # type: ignore[no-untyped-def]
    data = {"avg_bits": [3.0], "candidate_bits": [2, 3], "n_boot": 100,
            "environment": {"versions": {"torch": "x"}, "machine": "m", "threads": 1},
            "models": {"toy": {"seeds": {str(i): _seed(d, "tie") for i, d in enumerate(diffs)}, "draws": {}}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(qs, "RESULTS", path)
    text = qs.quality_section()
    row = next(line for line in text.splitlines() if line.startswith("| toy"))
    assert row.split("|")[2].strip() == "cet"  # the cost model column (old files hold plain cet only)
    assert word in row.split("|")[9]
    assert "0 / 5 / 0 (same plan in 0)" in row  # per-seed bootstrap verdicts are all ties here


def test_a_missing_results_file_says_how_to_make_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(qs, "RESULTS", tmp_path / "none.json")
    with pytest.raises(FileNotFoundError, match="make results"):
        qs.quality_section()


def test_an_unfinished_prove_run_shows_what_it_finished(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    check = {"number": 1, "title": "Second-order prediction", "verdict": "pass", "value": "r = 0.99"}
    other = {"number": 3, "title": "Major-axis theorem", "verdict": "fail", "value": "40%"}
    for model, data in {"digits-mlp": {"checks": [check, other]},
                        "mobilenetv2": {"finished": False, "checks": [check]}}.items():
        (tmp_path / model).mkdir()
        (tmp_path / model / "results.json").write_text(json.dumps(data))
    monkeypatch.setattr(qs, "CHECKS_DIR", tmp_path)
    text = qs.checks_section()
    assert "| digits-mlp | mobilenetv2 (unfinished run) |" in text
    row3 = next(line for line in text.splitlines() if line.startswith("| 3 "))
    assert "fail (40%)" in row3 and "not run yet" in row3


def test_a_check_8_that_judged_an_earlier_default_says_so(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL

    def check8(judged: str, verdict: str) -> dict:  # type: ignore[type-arg]
        return {"number": 8, "title": "Whole-plan prediction", "verdict": verdict, "value": f"{judged} value",
                "data": {"spearman": {judged: 0.9, "hawq-v3": 0.8}}}

    reports = {"digits-mlp": [check8(DEFAULT_COST_MODEL, "pass")], "mobilenetv2": [check8("old-default", "partial")]}
    for model, checks in reports.items():
        (tmp_path / model).mkdir()
        (tmp_path / model / "results.json").write_text(json.dumps({"checks": checks}))
    monkeypatch.setattr(qs, "CHECKS_DIR", tmp_path)
    text = qs.checks_section()
    row = next(line for line in text.splitlines() if line.startswith("| 8 "))
    assert "judged old-default, an earlier default" in row and row.count("earlier default") == 1
    assert f"mobilenetv2: check 8 has not been run for the default cost model `{DEFAULT_COST_MODEL}` yet." in text
    (tmp_path / "mobilenetv2-check8").mkdir()
    (tmp_path / "mobilenetv2-check8" / "results.json").write_text(
        json.dumps({"checks": [check8(DEFAULT_COST_MODEL, "pass")]}))
    text = qs.checks_section()
    assert f"mobilenetv2, check 8 alone for the default `{DEFAULT_COST_MODEL}`" in text and ": pass (" in text
    (tmp_path / "mobilenetv2-check8" / "results.json").write_text(json.dumps({"checks": [check8("other", "pass")]}))
    with pytest.raises(ValueError, match="rerun it"):
        qs.checks_section()

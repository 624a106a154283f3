"""The README's measured-selection section: rows and verdict counts from the results files, and runs made for
another default (cost model or pool) refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cetopt.costmodels.registry import DEFAULT_COST_MODEL
from cetopt.rerank import DEFAULT_POOL
from cetopt.results import selection


def _ci(estimate: float, verdict: str) -> dict[str, float | str]:
    return {"estimate": estimate, "low": estimate - 0.01, "high": estimate + 0.01, "verdict": verdict}


def _write(folder: Path, default: str = DEFAULT_COST_MODEL, pool: tuple[str, ...] = DEFAULT_POOL) -> None:
    def row(plan: str, **vs: dict[str, float | str]) -> dict[str, object]:
        return {"avg_bits": 4.0, "plan": plan, "metric": "agreement", "n_test": 10, "mean": 0.5,
                "selection": {"returned": "hawq-v3"} if plan == "select" else None,
                **{f"vs_{k.replace('_', '-')}": v for k, v in vs.items()}}

    rows = [row(DEFAULT_COST_MODEL, hawq_v3=_ci(-0.04, "tie")),
            row("select", hawq_v3=_ci(0.0, "tie"), uniform=_ci(0.4, "better")),
            row("rerank8", **{DEFAULT_COST_MODEL.replace("-", "_"): _ci(-0.05, "worse")})]
    (folder / "selection.json").write_text(json.dumps({
        "meta": {"default": default, "pool": list(pool), "k": 8, "command": "python benchmarks/selection.py"},
        "results": {"mobilenetv2": {"rows": rows, "split": "validation"}}}))
    user_row = {"avg_bits": 4.0, "n_test": 20, "vs_hawq-v3": _ci(-0.06, "worse"), "selected": "hawq-v3",
                "selection_split": "validation", "plan_vs_hawq-v3": _ci(0.0, "tie"), "plan_vs_uniform": None}
    (folder / "user-check.json").write_text(json.dumps({"models": [{"model": "mnv2-kl", "method": default,
                                                                    "rows": [user_row]}]}))


def test_rows_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path)
    monkeypatch.setattr(selection, "RESULTS", tmp_path)
    text = selection.selection_section()
    assert "| mobilenetv2 | 4 | agreement | 10 | -4.00 [-5.00, -3.00] tie | hawq-v3 (validation) |" in text
    assert "| mnv2-kl (outside the zoo) | 4 | test metric | 20 | -6.00 [-7.00, -5.00] worse | hawq-v3 (validation)" in text
    assert "Over these 2 cells the shipped plan is better than HAWQ-V3 in 0, ties in 2 and is worse in 0" in text
    assert "against uniform (where the budget is a candidate width): better in 1, ties in 0, worse in 0" in text
    assert "better than its optimum in 0 zoo cells, ties in 0 and is worse in 1" in text


def test_a_run_for_another_default_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, pool=("cet-nograd",))
    monkeypatch.setattr(selection, "RESULTS", tmp_path)
    with pytest.raises(ValueError, match="rerun python benchmarks/selection.py"):
        selection.selection_section()

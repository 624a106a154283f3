"""The README's evaluation section: says plainly when nothing was evaluated, else quotes the results file."""

from __future__ import annotations

import json

from cetopt.results.evaluation import evaluation_section


def _ci(estimate: float, method: str = "cluster bootstrap over 11 clusters (384 examples)") -> dict:
    return {"estimate": estimate, "low": estimate - 0.01, "high": estimate + 0.01, "verdict": "better",
            "ci_method": method}


def test_without_results_every_table_is_called_development(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = evaluation_section(tmp_path / "missing.json")
    assert text.startswith("No evaluation model has been run yet") and "development result" in text


def test_rows_quote_the_file_and_its_recipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "evaluation-check.json"
    row = {"avg_bits": 4.0, "n_test": 384, "selected": "cet-upper#0", "selection_split": "validation",
           "vs_hawq-v3": _ci(0.02), "vs_uniform": _ci(0.05), "plan_vs_hawq-v3": _ci(0.02)}
    path.write_text(json.dumps({"models": [{"model": "eval-efficientnet-lite0", "rows": [row]}],
                                "recipe": {"drift_from_frozen": {}}}))
    text = evaluation_section(path)
    assert "run once on 1 pretrained model(s) outside the zoo" in text and "The run judged the frozen recipe." in text
    assert "| eval-efficientnet-lite0 | 4 | 384 | cluster bootstrap over 11 clusters (384 examples) |" in text
    path.write_text(json.dumps({"models": [{"model": "m", "rows": [row]}],
                                "recipe": {"drift_from_frozen": {"cost_model": ["cet-upper", "cet"]}}}))
    assert "differ from the frozen recipe in ['cost_model']: it does not judge it" in evaluation_section(path)

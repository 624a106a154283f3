"""The README's evaluation section: says plainly when nothing was evaluated, else quotes the results file."""

from __future__ import annotations

import json

from cetopt.results.evaluation import evaluation_section, objective_section


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
    text = evaluation_section(path, more=())
    assert "run once on 1 pretrained model(s) outside the zoo" in text and "The run judged the frozen recipe." in text
    assert any(line.startswith("| eval-efficientnet-lite0 | 4 | 384 | - | - | - | - | +2.00 [+1.00, +3.00]")
               for line in text.splitlines())
    assert "| cluster bootstrap over 11 clusters (384 examples) |" in text
    path.write_text(json.dumps({"models": [{"model": "m", "rows": [row]}],
                                "recipe": {"drift_from_frozen": {"cost_model": ["cet-upper", "cet"]}}}))
    assert "differ from the frozen recipe in ['cost_model']: it does not judge it" in evaluation_section(path, more=())


def test_objective_table_pairs_the_two_runs_by_example_and_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The fidelity-vs-own-loss table quotes the paired difference of the two runs' outcomes: here fidelity's
    default plan agrees on 3 more of 8 examples (+37.50 points) and every other plan kind ties exactly."""
    clusters = ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4"]
    task_out = {"cet-upper": [1, 0, 0, 1, 0, 1, 0, 1], "plan": [1] * 8, "hawq-v3": [0] * 8, "uniform": [0] * 8}
    fid_out = {**task_out, "cet-upper": [1, 1, 1, 1, 0, 1, 1, 1]}

    def run(outcomes: dict) -> dict:
        row = {"avg_bits": 4.0, "n_test": 8, "fp32": 1.0, "selected": "hawq-v3", "selection_split": "validation",
               "means": {k: sum(v) / 8 for k, v in outcomes.items()}, "outcomes": outcomes}
        return {"models": [{"model": "m", "method": "cet-upper", "clusters": clusters, "rows": [row]}],
                "recipe": {"drift_from_frozen": {}}}

    (tmp_path / "t.json").write_text(json.dumps(run(task_out)))
    (tmp_path / "f.json").write_text(json.dumps(run(fid_out)))
    text = objective_section(tmp_path / "t.json", tmp_path / "f.json")
    row = next(line for line in text.splitlines() if line.startswith("| m | 4 | 8 | +37.50"))
    assert row.count("+0.00 [+0.00, +0.00] tie") == 3
    main = evaluation_section(tmp_path / "t.json", tmp_path / "f.json")
    assert "| m | 4 | 8 | 100.0 | 50.0 | 0.0 | 0.0 |" in main  # the levels: FP32, default dp, HAWQ-V3, uniform
    assert "#the-evaluation-models-fidelity-objective" in main
    assert "#the-evaluation-models-fidelity-objective" not in evaluation_section(tmp_path / "t.json",
                                                                                  tmp_path / "missing.json")
    assert objective_section(tmp_path / "t.json", tmp_path / "missing.json").startswith("Not run yet")


def test_short_verdict_counts_each_cell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "e.json"
    worse = {**_ci(-0.05), "verdict": "worse"}
    rows = [{"avg_bits": b, "n_test": 4, "selected": "hawq-v3", "selection_split": "validation", "vs_hawq-v3": ci,
             "vs_uniform": _ci(0.3), "plan_vs_hawq-v3": _ci(0.0) | {"verdict": "tie"}, "plan_vs_uniform": None}
            for b, ci in ((3.0, _ci(0.02)), (4.0, worse))]
    path.write_text(json.dumps({"models": [{"model": "m", "rows": rows}], "recipe": {"drift_from_frozen": {}}}))
    first = evaluation_section(path, more=()).splitlines()[0]
    assert "The default's dp plan: against HAWQ-V3 better in 1, tie in 0, worse in 1 of 2 cells" in first
    assert "against uniform precision better in 2, tie in 0, worse in 0 of 2 cells" in first
    assert "The plan `cetopt plan` ships: against HAWQ-V3 better in 0, tie in 2, worse in 0 of 2 cells." in first


def test_more_evaluation_files_add_their_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    row = {"avg_bits": 4.0, "n_test": 8, "selected": "hawq-v3", "selection_split": "validation",
           "vs_hawq-v3": _ci(0.02), "vs_uniform": _ci(0.05), "plan_vs_hawq-v3": _ci(0.0)}
    for name, model, drift in (("a.json", "lite0", {}), ("b.json", "lite2", {})):
        (tmp_path / name).write_text(json.dumps({"models": [{"model": model, "rows": [row]}],
                                                 "recipe": {"drift_from_frozen": drift}}))
    text = evaluation_section(tmp_path / "a.json", tmp_path / "none.json", (tmp_path / "b.json",))
    assert "run once on 2 pretrained model(s)" in text and "| lite2 | 4 | 8 |" in text
    assert "The run judged the frozen recipe." in text
    (tmp_path / "b.json").write_text(json.dumps({"models": [{"model": "lite2", "rows": [row]}],
                                                 "recipe": {"drift_from_frozen": {"bits": [[2], [3]]}}}))
    assert "differ from the frozen recipe in ['bits']" in evaluation_section(tmp_path / "a.json",
                                                                              tmp_path / "none.json",
                                                                              (tmp_path / "b.json",))

"""The README's evaluation section: the frozen default recipe judged on evaluation models, pretrained models outside
the zoo that were never used to choose anything (docs/protocol.md), read from benchmarks/results/evaluation-check.json
(``python benchmarks/user_check.py --targets <evaluation models> --out benchmarks/results/evaluation-check``). Until
that file exists the section says that no evaluation has been run, so every other table reads as development."""

from __future__ import annotations

import json
from pathlib import Path

from cetopt.results.provenance import ROOT, stale_note
from cetopt.tables import ci_cell, markdown_table

RESULTS = ROOT / "benchmarks" / "results" / "evaluation-check.json"
COMMAND = ("python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite0.py:spec "
           "--out benchmarks/results/evaluation-check")


def evaluation_section(results: Path = RESULTS) -> str:
    """Per evaluation model and budget: the default's dp plan and `cetopt plan`'s selection vs HAWQ-V3 and uniform."""
    from cetopt.results.recipe import frozen_recipe

    frozen = frozen_recipe()
    commit = str(frozen["code_version"].get("commit") or "?")[:12]
    if not results.is_file():
        return (f"No evaluation model has been run yet (docs/protocol.md): the frozen recipe "
                f"(docs/results/recipe.json, frozen at {commit}) is to be judged on pretrained models outside the "
                f"zoo with `{COMMAND}`. Until then every table in this README is a development result: the default "
                "was chosen on those models.")
    data = json.loads(results.read_text())
    rows = []
    for m in data["models"]:
        for r in m["rows"]:
            method = (r.get("vs_hawq-v3") or {}).get("ci_method", "paired bootstrap over examples")
            rows.append([m["model"], f"{r['avg_bits']:g}", str(r["n_test"]), method, ci_cell(r.get("vs_hawq-v3")),
                         ci_cell(r.get("vs_uniform")), f"{r['selected']} ({r['selection_split']})",
                         ci_cell(r.get("plan_vs_hawq-v3"))])
    judged = data.get("recipe", {})
    drifted = judged.get("drift_from_frozen")
    recipe_line = ("The run judged the frozen recipe." if drifted == {} else
                   f"The run's defaults differ from the frozen recipe in {sorted(drifted)}: it does not judge it."
                   if drifted else "The run did not record which recipe it judged.")
    text = [f"Evaluation: the default recipe, frozen at {commit} (docs/results/recipe.json), run once on "
            f"{len(data['models'])} pretrained model(s) outside the zoo that chose nothing (docs/protocol.md), one "
            f"seed each; differences x100 with 95% CIs by the method named in each row. {recipe_line}",
            markdown_table(["model", "avg bits", "test inputs", "CI method", "default dp vs HAWQ-V3",
                            "default dp vs uniform", "`cetopt plan` ships", "plan vs HAWQ-V3"], rows),
            f"Generated from benchmarks/results/evaluation-check.json (`{COMMAND}`)."]
    if note := stale_note("evaluation"):
        text.append(note)
    return "\n\n".join(text)

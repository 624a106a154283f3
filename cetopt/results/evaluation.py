"""The README's evaluation section: the frozen default recipe judged on evaluation models, pretrained models outside
the zoo that were never used to choose anything (docs/protocol.md), read from benchmarks/results/evaluation-check.json
(``python benchmarks/user_check.py --targets <evaluation models> --out benchmarks/results/evaluation-check``). Until
that file exists the section says that no evaluation has been run, so every other table reads as development.

When benchmarks/results/evaluation-check-fidelity.json exists (the same run with ``--objective fidelity``), a second
table compares the two objectives' plans on the same test examples, paired and clustered by source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from cetopt.results.provenance import ROOT, stale_note
from cetopt.tables import ci_cell, markdown_table

RESULTS = ROOT / "benchmarks" / "results" / "evaluation-check.json"
# more evaluation models, one file each (each file's generating code differs: its model file is part of it)
MORE_RESULTS = (ROOT / "benchmarks" / "results" / "evaluation-check-lite2.json",)
FIDELITY_RESULTS = ROOT / "benchmarks" / "results" / "evaluation-check-fidelity.json"
COMMAND = ("python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite0.py:spec "
           "--out benchmarks/results/evaluation-check")
MORE_COMMAND = "python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite2.py:spec"
FIDELITY_COMMAND = ("python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite0.py:spec "
                    "--objective fidelity --out benchmarks/results/evaluation-check-fidelity")
_VERDICT = {"a": "better", "b": "worse"}


def _levels(model: Mapping[str, Any], row: Mapping[str, Any], method: str) -> list[str]:
    """FP32, the default's dp plan, HAWQ-V3's and uniform's metric x100 ("-" where a plan is missing)."""
    means = row.get("means", {})
    return [f"{100 * row['fp32']:.1f}" if "fp32" in row else "-",
            *(f"{100 * means[k]:.1f}" if k in means else "-" for k in (method, "hawq-v3", "uniform"))]


def _main_table(data: Mapping[str, Any]) -> str:
    rows = []
    for m in data["models"]:
        method = m.get("method", "cet-upper")
        for r in m["rows"]:
            ci_method = (r.get("vs_hawq-v3") or {}).get("ci_method", "paired bootstrap over examples")
            rows.append([m["model"], f"{r['avg_bits']:g}", str(r["n_test"]), *_levels(m, r, method),
                         ci_cell(r.get("vs_hawq-v3")), ci_cell(r.get("vs_uniform")),
                         f"{r['selected']} ({r['selection_split']})", ci_cell(r.get("plan_vs_hawq-v3")), ci_method])
    return markdown_table(["model", "avg bits", "test inputs", "FP32", "default dp", "HAWQ-V3", "uniform",
                           "default dp vs HAWQ-V3", "default dp vs uniform", "`cetopt plan` ships",
                           "plan vs HAWQ-V3", "CI method"], rows)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _verdict_line(data: Mapping[str, Any]) -> str:
    """One sentence: how often the default's dp plan and the shipped plan beat, tie or lose to each baseline."""
    parts = []
    for label, keys in (("The default's dp plan", ("vs_hawq-v3", "vs_uniform")),
                        ("The plan `cetopt plan` ships", ("plan_vs_hawq-v3", "plan_vs_uniform"))):
        said = []
        for key, name in zip(keys, ("HAWQ-V3", "uniform precision")):
            verdicts = [r[key]["verdict"] for m in data["models"] for r in m["rows"] if r.get(key)]
            if verdicts:
                counts = ", ".join(f"{word} in {verdicts.count(word)}" for word in ("better", "tie", "worse"))
                said.append(f"against {name} {counts} of {len(verdicts)} cells")
        parts.append(f"{label}: " + "; ".join(said))
    return ("**In short** (95% CIs; a tie is an interval that holds 0): " + ". ".join(parts) + ".")


def objective_rows(task: Mapping[str, Any], fidelity: Mapping[str, Any]) -> list[list[str]]:
    """Per model and budget present in both runs: each plan kind (default dp, `cetopt plan`, HAWQ-V3, uniform)
    under the fidelity objective minus under the model's own loss, x100, paired over the same test examples and
    clustered by their sources when the run recorded them (:func:`cetopt.stats.paired_ci`)."""
    from cetopt.stats import paired_ci

    out = []
    by_model = {m["model"]: m for m in task["models"]}
    for fm in fidelity["models"]:
        tm = by_model.get(fm["model"])
        if tm is None:
            continue
        task_rows = {r["avg_bits"]: r for r in tm["rows"]}
        method = fm.get("method", "cet-upper")
        for fr in fm["rows"]:
            tr = task_rows.get(fr["avg_bits"])
            if tr is None or "outcomes" not in fr or "outcomes" not in tr:
                continue
            cells = []
            for kind in (method, "plan", "hawq-v3", "uniform"):
                a, b = fr["outcomes"].get(kind), tr["outcomes"].get(kind)
                if a is None or b is None:
                    cells.append("-")
                    continue
                ci = paired_ci(a, b, fm.get("clusters"), n_boot=2000, seed=0)
                cells.append(ci_cell({"estimate": ci.estimate, "low": ci.low, "high": ci.high,
                                      "verdict": _VERDICT.get(ci.verdict, "tie")}))
            out.append([fm["model"], f"{fr['avg_bits']:g}", str(fr["n_test"]), *cells])
    return out


def evaluation_section(results: Path = RESULTS, fidelity: Path = FIDELITY_RESULTS,
                       more: tuple[Path, ...] = MORE_RESULTS) -> str:
    """Per evaluation model and budget: the default's dp plan and `cetopt plan`'s selection vs HAWQ-V3 and uniform
    (and a link to :func:`objective_section` when the fidelity run exists)."""
    from cetopt.results.recipe import frozen_recipe

    frozen = frozen_recipe()
    commit = str(frozen["code_version"].get("commit") or "?")[:12]
    if not results.is_file():
        return (f"No evaluation model has been run yet (docs/protocol.md): the frozen recipe "
                f"(docs/results/recipe.json, frozen at {commit}) is to be judged on pretrained models outside the "
                f"zoo with `{COMMAND}`. Until then every table in this README is a development result: the default "
                "was chosen on those models.")
    data = json.loads(results.read_text())
    runs = [data, *(json.loads(p.read_text()) for p in more if p.is_file())]
    data = {"models": [m for run in runs for m in run["models"]]}
    drifts = [run.get("recipe", {}).get("drift_from_frozen") for run in runs]
    drifted = ({} if all(d == {} for d in drifts) else
               next((d for d in drifts if d), None))
    recipe_line = ("The run judged the frozen recipe." if drifted == {} else
                   f"The run's defaults differ from the frozen recipe in {sorted(drifted)}: it does not judge it."
                   if drifted else "The run did not record which recipe it judged.")
    text = [_verdict_line(data),
            f"Evaluation: the default recipe, frozen at {commit} (docs/results/recipe.json), run once on "
            f"{len(data['models'])} pretrained model(s) outside the zoo that chose nothing (docs/protocol.md), one "
            f"seed each, with the loss its spec defines; metric and differences x100, 95% CIs by the method named in "
            f"each row. {recipe_line}", _main_table(data),
            f"Generated from benchmarks/results/evaluation-check.json (`{COMMAND}`)"
            + "".join(f" and {_shown(p)} (`{MORE_COMMAND} --out {_shown(p.with_suffix(''))}`)"
                      for p in more if p.is_file()) + "."]
    if fidelity.is_file():
        text.append("The same model planned for fidelity to its FP32 outputs instead of its own loss: "
                    "[docs/results](docs/results/README.md#the-evaluation-models-fidelity-objective).")
    if note := stale_note("evaluation"):
        text.append(note)
    return "\n\n".join(text)


def objective_section(results: Path = RESULTS, fidelity: Path = FIDELITY_RESULTS) -> str:
    """docs/results: each plan kind of an evaluation model under the fidelity objective vs under its own loss."""
    if not (results.is_file() and fidelity.is_file()):
        return (f"Not run yet: `{FIDELITY_COMMAND}` plans the evaluation model for fidelity to its FP32 outputs, "
                f"beside `{COMMAND}` with its own loss.")
    rows = objective_rows(json.loads(results.read_text()), json.loads(fidelity.read_text()))
    text = ["The evaluation model planned for fidelity to its FP32 outputs (`--objective fidelity`) instead of its "
            "own loss: each plan's metric under the fidelity objective minus under the own loss, on the same test "
            "examples (x100, paired, 95% CIs clustered by source; one run each, one seed):",
            markdown_table(["model", "avg bits", "test inputs", "default dp", "`cetopt plan`", "HAWQ-V3", "uniform"],
                           rows),
            f"Generated from {_shown(fidelity)} (`{FIDELITY_COMMAND}`) and {_shown(results)} (`{COMMAND}`)."]
    if note := stale_note("evaluation"):
        text.append(note)
    return "\n\n".join(text)

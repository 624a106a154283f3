"""The README's measured-selection section: what ``cetopt plan`` ships (the default plan or the pool's, whichever
measures better on held-out batches) against HAWQ-V3 and uniform, on the zoo's models
(benchmarks/results/selection.json, ``python benchmarks/selection.py``) and on the models outside the zoo
(benchmarks/results/user-check.json, ``python benchmarks/user_check.py``); and what re-ranking the default's k best
plans alone does. Runs made for another default cost model or pool are refused by name, not shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from cetopt.results.provenance import stale_note
from cetopt.tables import ci_cell, markdown_table

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run python benchmarks/{name.split('.')[0].replace('-', '_')}.py")
    return json.loads(path.read_text())


def _verdicts(rows: list[Mapping[str, Any]], key: str) -> dict[str, int]:
    out = {"better": 0, "tie": 0, "worse": 0}
    for row in rows:
        if row.get(key) is not None:
            out[row[key]["verdict"]] += 1
    return out


def baseline_share(plans: list[Mapping[str, Any]], default: str) -> str:
    """How many shipped plans are a pool member's (a baseline's) rather than the default cost model's own, counting
    the cells where both made the same plan: where the shipped plan is the baseline's, "not worse than it" holds
    by construction, so only the default's own dp plan vs the baseline is the cost model's record."""
    theirs = sum(1 for p in plans if not str(p["shipped"]).startswith(default))
    same = sum(1 for p in plans if str(p["shipped"]).startswith(default) and "(= " in str(p["shipped"]))
    return (f"The shipped plan is a pool member's (a baseline's) in {theirs + same} of {len(plans)} cells "
            f"({theirs} where it measured better than the default's plan, {same} where both made the same plan) and "
            f"the default cost model's own, different plan in {len(plans) - theirs - same}; in the first "
            f"{theirs + same} cells \"not worse than HAWQ-V3\" holds by construction, so the column `{default} dp vs "
            "HAWQ-V3` is the cost model's own record.")


def selection_section() -> str:
    """Per model and budget: the default's dp plan and ``cetopt plan``'s selection vs HAWQ-V3 and uniform."""
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cetopt.rerank import DEFAULT_POOL

    zoo, user = _load("selection.json"), _load("user-check.json")
    meta = zoo["meta"]
    if meta.get("default") != DEFAULT_COST_MODEL or tuple(meta.get("pool", ())) != DEFAULT_POOL:
        raise ValueError(f"benchmarks/results/selection.json measured default {meta.get('default')!r} with pool "
                         f"{meta.get('pool')!r}, the library's are {DEFAULT_COST_MODEL!r} and {DEFAULT_POOL!r}: rerun "
                         "python benchmarks/selection.py")
    rows, plans, reranked = [], [], []
    for model, res in zoo["results"].items():
        by = {(r["avg_bits"], r["plan"]): r for r in res["rows"]}
        for (avg, plan), r in by.items():
            if plan != "select":
                continue
            default = by[(avg, DEFAULT_COST_MODEL)]
            plans.append({**r, "shipped": r["selection"]["returned"]})
            reranked.append(by[(avg, "rerank8")])
            rows.append([model, f"{avg:g}", r["metric"], str(r["n_test"]), ci_cell(default.get("vs_hawq-v3")),
                         f"{r['selection']['returned']} ({res['split']})", ci_cell(r.get("vs_hawq-v3")),
                         ci_cell(r.get("vs_uniform"))])
    for m in user["models"]:
        if m["method"] != DEFAULT_COST_MODEL or "plan_vs_hawq-v3" not in m["rows"][0]:
            raise ValueError("benchmarks/results/user-check.json predates the default cost model or cetopt plan: "
                             "rerun python benchmarks/user_check.py")
        for r in m["rows"]:
            plans.append({"vs_hawq-v3": r["plan_vs_hawq-v3"], "vs_uniform": r["plan_vs_uniform"],
                          "shipped": r["selected"]})
            rows.append([f"{m['model']} (outside the zoo)", f"{r['avg_bits']:g}", "test metric", str(r["n_test"]),
                         ci_cell(r["vs_hawq-v3"]), f"{r['selected']} ({r['selection_split']})", ci_cell(r["plan_vs_hawq-v3"]),
                         ci_cell(r["plan_vs_uniform"])])
    hawq, uniform = _verdicts(plans, "vs_hawq-v3"), _verdicts(plans, "vs_uniform")
    ci_methods = sorted({str((p.get("vs_hawq-v3") or {}).get("ci_method", "bootstrap over test examples"))
                         for p in plans})
    alone = _verdicts(reranked, f"vs_{DEFAULT_COST_MODEL}")
    table = markdown_table(["model", "avg bits", "metric", "test inputs", f"{DEFAULT_COST_MODEL} dp vs HAWQ-V3",
                            "`cetopt plan` ships", "plan vs HAWQ-V3", "plan vs uniform"], rows)
    return "\n\n".join([
        f"`cetopt plan MODEL --avg-bits B --out plan.json` measures the default problem's dp plan and the plans of "
        f"the pool ({', '.join(DEFAULT_POOL)}) at the same budget on its validation batches (held out from the costs, which are fitted on "
        "calibration batches; calibration batches only when a model has no validation split, and the table says so; "
        "never the test set) and writes the better one. Differences x100, paired 95% CIs over the same test inputs "
        f"({'; '.join(ci_methods)}); {len(zoo['results'])} development models of the zoo (they chose the default, "
        f"docs/protocol.md) and {len(user['models'])} loaded through the user path that share their weights; one "
        "seed per model (the zoo's seed 0; the 5-seed comparison of the default alone is the quality table below):",
        table,
        f"Over these {len(plans)} cells the shipped plan is better than HAWQ-V3 in {hawq['better']}, ties in "
        f"{hawq['tie']} and is worse in {hawq['worse']}; against uniform (where the budget is a candidate width): "
        f"better in {uniform['better']}, ties in {uniform['tie']}, worse in {uniform['worse']}. Re-ranking the "
        f"default's {meta['k']} best plans alone, without the pool, is better than its optimum in {alone['better']} "
        f"zoo cells, ties in {alone['tie']} and is worse in {alone['worse']}: its plans differ in a layer or two and "
        "share the cost model's mistakes, so it is not the default.",
        baseline_share(plans, DEFAULT_COST_MODEL),
        f"Generated from benchmarks/results/selection.json (`{meta['command']}`) and "
        "benchmarks/results/user-check.json (`python benchmarks/user_check.py`).", stale_note("selection")])

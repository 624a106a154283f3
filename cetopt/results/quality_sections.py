"""Generated sections (docs/results/README.md) from committed results: the zoo's shipped models, the CET checks' verdicts,
and the quality table with confidence intervals (see cetopt.results.quality for how they are measured).

Every number comes from a file: cetopt/data/zoo/manifest.json, docs/results/cet-checks/*/results.json,
docs/results/quality/results.json. No claim rests on a difference inside its CI: such a difference is
written "tie within CI".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from cetopt.results.quality import CHECKS_DIR, MODELS, RESULTS
from cetopt.stats import seed_summary
from cetopt.tables import markdown_table


def _load(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make results` to produce it")
    return json.loads(path.read_text())


def _mean_ci(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "-"
    return seed_summary(values).describe(scale=scale, digits=digits)


def _difference(values: Sequence[float], plan: str, other: str) -> str:
    """Mean per-seed difference in points with its t-interval and the verdict."""
    if len(values) < 2:
        return "-"
    s = seed_summary([100 * v for v in values])
    word = f"{plan} ahead" if s.low > 0 else f"{other} ahead" if s.high < 0 else "tie within CI"
    return f"{s.mean:+.2f} [{s.low:+.2f}, {s.high:+.2f}] {word}"


def _per_seed_verdicts(paired: Sequence[dict[str, Any]]) -> str:
    better = sum(p["verdict"] == "a" for p in paired)
    worse = sum(p["verdict"] == "b" for p in paired)
    same = sum(p["same_plan"] for p in paired)
    return f"{better} / {len(paired) - better - worse} / {worse} (same plan in {same})"


def _budget_row(model: str, b: str, seeds: dict[str, Any], plan: str) -> list[str]:
    entries = [s["budgets"][b] for s in seeds.values() if b in s["budgets"]]
    acc = {m: [e["plans"][m]["test_accuracy"] for e in entries if e["plans"].get(m)] for m in (plan, "hawq-v3", "uniform")}
    diffs = {o: [e["paired"][f"{plan}-{o}"]["estimate"] for e in entries if f"{plan}-{o}" in e["paired"]]
             for o in ("hawq-v3", "uniform")}
    ratios = {m: [e["plans"][m]["packed_ratio"] for e in entries if e["plans"].get(m)] for m in (plan, "hawq-v3")}
    paired = [e["paired"][f"{plan}-hawq-v3"] for e in entries if f"{plan}-hawq-v3" in e["paired"]]
    return [model, plan, b, str(len(entries)), _mean_ci([s["fp_accuracy"] for s in seeds.values()]),
            _mean_ci(acc[plan]), _mean_ci(acc["hawq-v3"]), _mean_ci(acc["uniform"]) if acc["uniform"] else "-",
            _difference(diffs["hawq-v3"], plan, "HAWQ-V3"), _difference(diffs["uniform"], plan, "uniform"),
            _per_seed_verdicts(paired) if paired else "-",
            " / ".join(f"{min(r):.2f}-{max(r):.2f}" if r else "-" for r in ratios.values())]


def _pair_row(model: str, b: str, seeds: dict[str, Any], a: str, other: str) -> list[str] | None:
    """The two plan cost models against each other (per-seed paired differences, then over seeds)."""
    entries = [s["budgets"][b] for s in seeds.values() if b in s["budgets"]]
    paired = [e["paired"][f"{a}-{other}"] for e in entries if f"{a}-{other}" in e["paired"]]
    if not paired:
        return None
    return [model, b, _difference([p["estimate"] for p in paired], a, other), _per_seed_verdicts(paired)]


def quality_section() -> str:
    """The equal-budget quality table over seeds, the calibration draws and the fingerprints."""
    data = _load(RESULTS)
    plans = data.get("plan_methods", ["cet"])
    rows, pairs, draws, prints = [], [], [], []
    for model, entry in data["models"].items():
        for b in (f"{x:g}" for x in data["avg_bits"]):
            rows.extend(_budget_row(model, b, entry["seeds"], plan) for plan in plans)
            if len(plans) > 1 and (row := _pair_row(model, b, entry["seeds"], plans[0], plans[1])) is not None:
                pairs.append(row)
        for draw, d in entry.get("draws", {}).items():
            for b, budget in d["budgets"].items():
                for plan in plans:
                    p = budget["paired"].get(f"{plan}-hawq-v3")
                    if p:
                        word = {"a": f"{plan} ahead", "b": "HAWQ-V3 ahead", "tie": "tie within CI"}[p["verdict"]]
                        draws.append([model, plan, draw, b, f"{100 * p['estimate']:+.2f} [{100 * p['low']:+.2f}, "
                                      f"{100 * p['high']:+.2f}] {word}"])
        first = entry["seeds"].get("0")
        if first:
            fp = first["fingerprint"]
            prints.append([model, fp["fingerprint_weights"][:16], fp["fingerprint_calibration"][:16],
                           str(first["test_examples"])])
    table = markdown_table(
        ["model", "cost model", "avg bits", "seeds", "FP32", "plan", "HAWQ-V3", "uniform",
         "plan - HAWQ-V3, points [95% CI]", "plan - uniform, points [95% CI]", "per seed: plan better / tie / worse",
         "packed x: plan / HAWQ-V3"], rows)
    env = data["environment"]
    parts = [
        "Test accuracy at equal average-bit budgets (candidate bits "
        f"{'/'.join(map(str, data['candidate_bits']))}), mean ± 95% t-interval over the shipped seeds, for the plans "
        f"of the cost models {', '.join(plans)} (the first is the default, solved exactly by dp). All problems and "
        "the uniform plan are built on one model per seed (same weights, calibration data and quantiser); "
        f"differences are paired per seed (bootstrap over test examples, {data['n_boot']} resamples) and then "
        "summarised over seeds.", table]
    if pairs:
        parts += [f"{plans[0]} against {plans[1]} (the same seeds, points):",
                  markdown_table(["model", "avg bits", f"{plans[0]} - {plans[1]} [95% CI]",
                                  f"per seed: {plans[0]} better / tie / worse"], pairs)]
    parts += [
        "Other calibration draws (seed 0, plan - HAWQ-V3 in points, paired bootstrap 95% CI over test examples):",
        markdown_table(["model", "cost model", "calibration draw", "avg bits", "plan - HAWQ-V3"], draws)
        if draws else "(none)",
        "Fingerprints of seed 0 (SHA-256 prefixes; a run elsewhere reproduces these numbers when its fingerprints "
        "are equal):", markdown_table(["model", "weights", "calibration data", "test examples"], prints),
        f"Generated by `make results` (torch {env['versions'].get('torch', '?')}, {env['machine']}, "
        f"{env['threads']} thread) from docs/results/quality/results.json."]
    from cetopt.results.provenance import stale_note

    if note := stale_note("quality"):
        parts.append(note)
    return "\n\n".join(parts)


def zoo_section() -> str:
    """The shipped zoo weights: accuracy over seeds, the convergence report and the files' SHA-256."""
    from cetopt.zoo.store import manifest

    entries = manifest()
    rows = []
    for model in MODELS:
        mine = [e for e in entries.values() if e["model"] == model]
        if not mine:
            continue
        recipe = mine[0]["recipe"]
        rows.append([model, str(len(mine)), _mean_ci([e["test_accuracy"] for e in mine]),
                     str(mine[0]["test_examples"]), f"{recipe['epochs']} ({recipe['schedule']})",
                     f"{max(e['final_grad_norm'] for e in mine):.2g}", f"{max(e['train_loss'] for e in mine):.2g}",
                     ", ".join(e["sha256"][:8] for e in sorted(mine, key=lambda e: e["seed"]))])
    return markdown_table(["model", "seeds", "test accuracy (mean ± 95% CI)", "test examples", "epochs",
                           "max final gradient norm (train set)", "max train loss", "SHA-256 of seeds 0..4 (prefix)"], rows)


# pretrained models whose `cetopt prove` report is run by hand (too long for `make results` on 2 cores)
PRETRAINED = ("minilm", "mobilenetv2")


PLAN_CHECK = 8  # whole-plan prediction, which judges one cost model (the default when the run was made)


def _judged(check: dict[str, Any]) -> str | None:
    """The cost model check 8 judged (the first it compared), or None for other checks."""
    spearman = check.get("data", {}).get("spearman") if check["number"] == PLAN_CHECK else None
    return next(iter(spearman), None) if isinstance(spearman, dict) else None


def checks_section() -> str:
    """The verdict of every check of `cetopt prove` on each model (from docs/results/cet-checks). A check 8 that
    judged another cost model than today's default says so, and a later check-8-only run for the default
    (docs/results/cet-checks/MODEL-check8) is quoted under the table."""
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL

    reports = {m: _load(CHECKS_DIR / m / "results.json") for m in (*MODELS, *PRETRAINED)
               if (CHECKS_DIR / m / "results.json").exists()}
    if not reports:
        raise FileNotFoundError(f"no {CHECKS_DIR}/*/results.json: run `make results`")
    titles = {c["number"]: c["title"] for r in reports.values() for c in r["checks"]}
    rows = []
    stale = []
    for number, title in sorted(titles.items()):
        cells = []
        for model, r in reports.items():
            c = next((c for c in r["checks"] if c["number"] == number), None)
            judged = None if c is None else _judged(c)
            if judged is not None and judged != DEFAULT_COST_MODEL:
                stale.append(model)
            cells.append(("not run yet" if r.get("finished") is False else "-") if c is None
                         else f"{c['verdict']} ({c['value']}" + ("" if judged in (None, DEFAULT_COST_MODEL)
                                                                 else f"; judged {judged}, an earlier default") + ")")
        rows.append([str(number), title, *cells])
    # a stopped long run (prove resumes from its checkpoints) shows what it finished, marked as such
    headers = [f"{m} (unfinished run)" if r.get("finished") is False else m for m, r in reports.items()]
    text = [markdown_table(["#", "check", *headers], rows)]
    for model in stale:
        path = CHECKS_DIR / f"{model}-check8" / "results.json"
        if not path.exists():
            text.append(f"{model}: check 8 has not been run for the default cost model `{DEFAULT_COST_MODEL}` yet.")
            continue
        c = next(c for c in _load(path)["checks"] if c["number"] == PLAN_CHECK)
        if _judged(c) != DEFAULT_COST_MODEL:
            raise ValueError(f"{path} judged {_judged(c)!r}, not the default {DEFAULT_COST_MODEL!r}: rerun it")
        text.append(f"{model}, check {PLAN_CHECK} alone for the default `{DEFAULT_COST_MODEL}` "
                    f"([{path.parent.name}/report.md](cet-checks/{path.parent.name}/report.md)): "
                    f"{c['verdict']} ({c['value']}).")
    from cetopt.results.provenance import stale_note

    if note := stale_note("cet-checks"):
        text.append(note)
    return "\n\n".join(text)


def equal_size_section() -> str:
    """Every method of `cetopt prove`'s equal-size table on each model (seed 0), with packed ratios and the
    paired CI of the test accuracy against FP32."""
    parts = []
    for model in MODELS:
        path = CHECKS_DIR / model / "results.json"
        if not path.exists():
            continue
        data = _load(path)
        rows = [[f"{r['budget_bits']:g}", r["label"], "-" if r["avg_bits"] != r["avg_bits"] else f"{r['avg_bits']:.2f}",
                 "-" if r["packed_ratio"] != r["packed_ratio"] else f"{r['packed_ratio']:.2f}",
                 "-" if r["metric"] != r["metric"] else f"{r['metric']:.4f}", r.get("vs_fp") or "-", r["status"]]
                for r in data["equal_size"]]
        lossless = [[k, "none on the grid" if v is None else f"{v['avg_bits']:.2f}",
                     "-" if v is None else f"{v['packed_ratio']:.2f}", "-" if v is None else f"{v['metric']:.4f}",
                     "-" if v is None else (v.get("vs_fp") or "-")] for k, v in data["smallest_lossless"].items()]
        parts += [f"**{model}** (seed 0, FP32 test accuracy {data.get('fp_metric', float('nan')):.4f})",
                  markdown_table(["avg bits", "method", "achieved bits", "packed x", "test accuracy",
                                  "vs FP32, points [95% CI]", "status"], rows),
                  "Smallest size selected on the validation split (validation accuracy >= FP32's), reported on test:",
                  markdown_table(["method", "avg bits", "packed x", "test accuracy", "vs FP32, points [95% CI]"],
                                 lossless)]
    return "\n\n".join(parts)


def levels_section() -> str:
    """Measured metric per compression mode and budget (docs/results/levels/*/results.json)."""
    rows = []
    for model in MODELS:
        path = CHECKS_DIR.parent / "levels" / model / "results.json"
        if not path.exists():
            continue
        data = _load(path)
        modes = list(dict.fromkeys(p["mode"] for p in data["points"] if p["budget_bits"] is not None))
        budgets = sorted({p["budget_bits"] for p in data["points"] if p["budget_bits"] is not None})
        for b in budgets:
            at = {p["mode"]: p["metric"] for p in data["points"] if p["budget_bits"] == b}
            rows.append([model, f"{b:g}", f"{data['fp_metric']:.4f}",
                         *[f"{at[m]:.4f}" if m in at else "infeasible" for m in modes]])
    if not rows:
        raise FileNotFoundError("no docs/results/levels/*/results.json: run `make results`")
    return markdown_table(["model", "avg bits", "FP32", *modes], rows)

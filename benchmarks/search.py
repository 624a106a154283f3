"""Measured search (cetopt.search, issue 37) against the surrogate's exact optimum, the measured pool selection,
HAWQ-V3 and uniform, at equal budget, with the search budget (forward passes) on the x-axis.

Per model, seed and budget (3, 4, 5 average bits; uniform exists at 3 and 4 bits only) the plans are:

- ``dp``: the default problem's exact optimum (cet-upper, what ``cetopt extract`` + ``solve`` give).
- ``backend:NAME``: every other installed backend's plan of the same problem where it differs from dp's (the
  relaxations' rounded plans, greedy); the table compares each row with the best of these and dp on test.
- ``pool``: what ``cetopt plan`` ships without a search: dp's optimum, HAWQ-V3's plan and every installed
  backend's plan, the best on the validation batches.
- ``hawq-v3``, ``uniform``: the baselines.
- ``STRATEGY@N``: the search's plan with a budget of N forward passes (one calibration piece of one plan; the
  validation of its finalists included), seeded by all of the above.
- ``ship:STRATEGY@N``: what ``cetopt plan --search STRATEGY --search-forwards N`` ships: the pool and the search's
  plan, the best on validation.

Searches measure on the calibration data (cut into 16 pieces) and select on the validation batches; the test set
is only used here, for the table. Differences are test accuracy in points with paired bootstrap 95% CIs over the
(seed, test example) pairs (cetopt.stats), and the seed-level paired t verdict where there are several seeds.
Writes ``benchmarks/results/search.{json,md}``::

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/search.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

MODELS = ("digits-mlp", "digits-cnn", "mnist1d-resnet")
AVG_BITS = (3.0, 4.0, 5.0)
STRATEGIES = ("evopress", "local", "refit")
BUDGETS = (200, 400, 800)
AGAINST = ("dp", "pool", "hawq-v3", "uniform")
OUT = Path(__file__).resolve().parent / "results" / "search"


def zoo_case(name: str, seed: int) -> dict[str, Any]:
    from cetopt.modelspec import load_model_spec

    spec = load_model_spec(name, seed=seed)
    if spec.test_outcomes is None:
        raise SystemExit(f"{name}: the zoo spec has no per-example test outcomes")
    return {"spec": spec, "outcomes": lambda m: np.asarray(spec.test_outcomes(m), dtype=np.float64),
            "metric": "accuracy", "test": "the zoo's test set"}


def mobilenet_case(crops: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cost_models_pretrained as pretrained

    case = pretrained.mobilenet_case(crops)
    return {"spec": case["spec"], "outcomes": lambda m: case["outcomes"](m)["top1_agreement"],
            "metric": "top1_agreement", "test": case["test"], "clusters": case["clusters"]["top1_agreement"]}


def minilm_case() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cost_models_pretrained as pretrained

    case = pretrained.minilm_case()
    return {"spec": case["spec"], "outcomes": lambda m: case["outcomes"](m)["cosine"], "metric": "cosine",
            "test": case["test"], "clusters": case["clusters"]["cosine"]}


PRETRAINED = {"mobilenetv2": lambda crops: mobilenet_case(crops), "minilm": lambda crops: minilm_case()}


def run_cell(case: dict[str, Any], avg: float, strategies: Sequence[str], budgets: Sequence[int],
             seed: int) -> dict[str, Any]:
    """Every plan of one (model, seed, budget): label -> {"outcomes", "validation", "seconds", ...}."""
    from cetopt.baselines import uniform_bits
    from cetopt.measure import Measurer
    from cetopt.problem.model import Budget
    from cetopt.rerank import select_plan
    from cetopt.search.base import SearchBudget, SearchRequest, Seeding
    from cetopt.search.torch_measure import search_plan
    from cetopt.problem.evaluate import choices_from_bits
    from cetopt.builders.second_order import build
    from cetopt.workflow import recipe_with

    spec = case["spec"]
    start = time.perf_counter()
    if "priced" not in case:  # built once per model and seed; each budget attaches to it (the build is the cost)
        case["priced"] = build(spec, recipe_with(None))
    built = case["priced"].with_budget(Budget(avg_bits=avg))
    build_seconds = time.perf_counter() - start
    measurer = Measurer(spec)
    start = time.perf_counter()
    selection = select_plan(spec, built, 1, measurer=measurer)  # dp's optimum, HAWQ-V3's and every backend's plan
    pool_seconds = time.perf_counter() - start
    plans: dict[str, dict[str, Any]] = {}
    by_label = {p.label: p for p in selection.result.plans}
    dp = selection.result.solver_best
    plans["dp"] = {"choices": dict(dp.choices), "validation": dp.measured}
    plans["pool"] = {"choices": dict(selection.result.best.choices), "validation": selection.result.best.measured,
                     "returned": selection.result.best.label, "seconds": pool_seconds}
    hawq = next((p for p in selection.result.plans if p.source == "hawq-v3" or "hawq-v3" in p.same_as), None)
    if hawq is not None:
        plans["hawq-v3"] = {"choices": dict(hawq.choices), "validation": hawq.measured}
    for p in selection.result.plans:  # every other installed backend's plan, for "at least every single backend"
        if p.rank is None and p.source != "hawq-v3" and "hawq-v3" not in p.same_as:
            plans[f"backend:{p.source}"] = {"choices": dict(p.choices), "validation": p.measured}
    uniform = uniform_bits(built.problem, avg)
    seeds = {label.split(" ")[0]: dict(p.choices) for label, p in by_label.items() if p.rank is None}
    if uniform is not None:
        plans["uniform"] = {"choices": choices_from_bits(built.problem, uniform), "validation": None}
        seeds["uniform"] = plans["uniform"]["choices"]
    for strategy in strategies:
        for forwards in budgets:
            found = search_plan(spec, built, SearchRequest(strategy, SearchBudget(forwards), seed=seed),
                                seeding=Seeding(extra=seeds, k=4, backends=False), measurer=measurer)
            label = f"{strategy}@{forwards}"
            plans[label] = {"choices": dict(found.choices), "validation": found.validation_dloss,
                            "calibration": found.calibration_dloss, "forwards": found.forwards,
                            "seconds": found.seconds, "stopped": found.provenance["stopped"],
                            "descends_from": found.provenance["descends_from"]}
            ship = plans["pool"] if plans["pool"]["validation"] <= found.validation_dloss else plans[label]
            plans[f"ship:{label}"] = {"choices": ship["choices"], "validation": ship["validation"],
                                      "returned": "pool" if ship is plans["pool"] else label}
            print(f"    {label}: {found.forwards} fwd {found.seconds:.1f} s, validation {found.validation_dloss:+.5f} "
                  f"(dp {dp.measured:+.5f}, pool {selection.result.best.measured:+.5f})", flush=True)
    for entry in plans.values():
        entry["outcomes"] = case["outcomes"](measurer.model_with(built.weights_for_choices(entry["choices"])))
    return {"plans": plans, "build_seconds": build_seconds, "predicted_optimum": selection.surrogate_optimum,
            "bound": selection.surrogate_bound}


def compare(cells: Sequence[Mapping[str, Any]], label: str, other: str) -> dict[str, Any] | None:
    """Paired bootstrap over (seed, example) pairs of ``label`` vs ``other`` across ``cells`` (seeds), and the
    seed-level paired t verdict. A single cell whose test examples carry source clusters (MobileNetV2's photos)
    gets the cluster bootstrap over those sources instead (cetopt.stats.paired_ci)."""
    from cetopt.stats import paired_bootstrap_ci, paired_ci, paired_seed_ci

    pairs = [(c["plans"][label]["outcomes"], c["plans"][other]["outcomes"]) for c in cells
             if label in c["plans"] and other in c["plans"]]
    if not pairs or label == other:
        return None
    a, b = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    clusters = cells[0].get("clusters") if len(cells) == 1 else None
    ci = (paired_ci(a, b, clusters, n_boot=4000, seed=0) if clusters is not None
          else paired_bootstrap_ci(a, b, n_boot=4000, seed=0))
    summary, verdict = paired_seed_ci([p[0].mean() for p in pairs], [p[1].mean() for p in pairs])
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high,
            "verdict": {"a": "better", "b": "worse", "tie": "tie"}[ci.verdict], "seeds": len(pairs),
            "seed_verdict": {"a": "better", "b": "worse", "tie": "tie"}[verdict]}


def best_single_backend(cells: Sequence[Mapping[str, Any]]) -> str | None:
    """The single backend plan (dp's optimum or another installed backend's, ``backend:*``) with the highest mean
    test metric over ``cells``: the strictest reading of "at least every single backend's" (chosen on test on
    purpose: a plan that ties or beats it ties or beats each of them)."""
    labels = [label for label in cells[0]["plans"] if label == "dp" or label.startswith("backend:")]
    if not labels:
        return None
    return max(labels, key=lambda label: float(np.mean([c["plans"][label]["outcomes"].mean() for c in cells])))


def summarise(results: Mapping[str, Any], labels: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for model, by_bits in results.items():
        for avg, cells in by_bits.items():
            best = best_single_backend(cells)
            backends = sorted(label for label in cells[0]["plans"] if label.startswith("backend:"))
            for label in [*labels[:1], *backends, *labels[1:]]:
                if label not in cells[0]["plans"]:
                    continue
                row = {"model": model, "avg_bits": float(avg), "plan": label,
                       "mean": float(np.mean([c["plans"][label]["outcomes"].mean() for c in cells])),
                       **{f"vs_{o}": compare(cells, label, o) for o in AGAINST},
                       "best_backend": best, "vs_best_backend": None if best is None else compare(cells, label, best)}
                for key in ("forwards", "seconds"):
                    values = [c["plans"][label].get(key) for c in cells]
                    if all(v is not None for v in values):
                        row[key] = float(np.mean(values))
                rows.append(row)
    return rows


def stratified_ci(diffs: Sequence[np.ndarray], n_boot: int = 4000, seed: int = 0,
                  clusters: Sequence[Sequence[str] | None] | None = None) -> dict[str, Any]:
    """Mean over cells of each cell's mean paired difference, with a percentile bootstrap 95% CI that resamples
    within each cell (every cell weighs the same, whatever its test set's size): its examples, or, for a cell whose
    examples carry source clusters (``clusters[i]``: MobileNetV2's photos, MiniLM's sentence sources), its clusters,
    the cell's mean then being the resampled clusters' total over their example count."""
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for i, d in enumerate(diffs):
        ids = None if clusters is None else clusters[i]
        if ids is not None:  # per-cluster totals and sizes; a resample draws clusters with replacement
            _, index = np.unique(np.asarray(ids), return_inverse=True)
            units, sizes = np.bincount(index, weights=d), np.bincount(index).astype(np.float64)
        else:
            units, sizes = d, np.ones(d.size)
        for start in range(0, n_boot, 500):  # chunks bound the (500, n) index array
            stop = min(n_boot, start + 500)
            draw = rng.integers(0, units.size, size=(stop - start, units.size))
            boots[start:stop] += units[draw].sum(axis=1) / sizes[draw].sum(axis=1)
    boots /= len(diffs)
    estimate = float(np.mean([d.mean() for d in diffs]))
    low, high = (float(q) for q in np.quantile(boots, [0.025, 0.975]))
    return {"estimate": estimate, "low": low, "high": high,
            "verdict": "better" if low > 0 else "worse" if high < 0 else "tie"}


def curve(results: Mapping[str, Any], strategies: Sequence[str], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """Per strategy and budget, over every (model, bits, seed) cell: the mean test difference vs dp and vs the pool
    (bootstrap within every cell, over its sources where it has them), and how many (model, bits) rows are better / tie / worse."""
    out = []
    for strategy in strategies:
        for forwards in budgets:
            for prefix in ("", "ship:"):
                label = f"{prefix}{strategy}@{forwards}"
                entry: dict[str, Any] = {"plan": label, "strategy": strategy, "forwards": forwards}
                for other in ("dp", "pool"):
                    diffs, clusters, verdicts = [], [], []
                    for by_bits in results.values():
                        for cells in by_bits.values():
                            diffs += [c["plans"][label]["outcomes"] - c["plans"][other]["outcomes"] for c in cells]
                            clusters += [c.get("clusters") for c in cells]
                            verdicts.append(compare(cells, label, other)["verdict"])  # type: ignore[index]
                    entry[f"vs_{other}"] = {**stratified_ci(diffs, clusters=clusters),
                                            "rows": {v: verdicts.count(v) for v in ("better", "tie", "worse")}}
                seconds = [c["plans"][f"{strategy}@{forwards}"]["seconds"] for by_bits in results.values()
                           for cells in by_bits.values() for c in cells]
                entry["seconds"] = float(np.mean(seconds))
                out.append(entry)
    return out


def _cell(entry: Mapping[str, Any] | None) -> str:
    from cetopt.tables import ci_cell

    if entry is None:
        return "-"
    seeds = f" (seeds: {entry['seed_verdict']})" if entry.get("seeds", 1) > 1 else ""
    return ci_cell(entry) + seeds


def _best_cell(row: Mapping[str, Any]) -> str:
    """The row's comparison with the best single backend on test, naming it."""
    best = row.get("best_backend")
    if best is None or row.get("vs_best_backend") is None:
        return "-"
    return f"{_cell(row['vs_best_backend'])} ({best})"


def markdown(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], curve_rows: Sequence[Mapping[str, Any]],
             results: Mapping[str, Any]) -> str:
    from cetopt.tables import ci_cell

    lines = ["# Measured search vs the surrogate's optimum, the pool, HAWQ-V3 and uniform", "",
             f"`{meta['command']}`, {meta['seconds']:.0f} s, torch threads {meta['torch_threads']}, seeds per "
             f"model {meta['seeds']}. Generated by benchmarks/search.py; do not edit by hand.", "",
             "Test metric (accuracy; MobileNetV2: top-1 agreement with FP32; MiniLM: cosine to FP32's embedding) "
             "differences in points, paired bootstrap 95% CIs over the (seed, test example) pairs (the pretrained "
             "models, one each: a cluster bootstrap over their test photos / sentence sources); "
             "'better' / 'worse' when the CI excludes 0; '(seeds: ...)' is the seed-level paired t verdict. Plans: "
             "see the script's docstring. Searches measure on calibration pieces and select on validation; the test "
             "set is used only here.", "",
             "## The budget curve (every model, bits and seed)", "",
             "| plan | forwards | mean seconds | vs dp | rows better/tie/worse vs dp | vs pool | rows vs pool |",
             "|---|---|---|---|---|---|---|"]
    for e in curve_rows:
        r_dp, r_pool = e["vs_dp"]["rows"], e["vs_pool"]["rows"]
        lines.append(f"| {e['plan']} | {e['forwards']} | {e['seconds']:.1f} | {ci_cell(e['vs_dp'])} | "
                     f"{r_dp['better']}/{r_dp['tie']}/{r_dp['worse']} | {ci_cell(e['vs_pool'])} | "
                     f"{r_pool['better']}/{r_pool['tie']}/{r_pool['worse']} |")
    for model in results:
        lines += ["", f"## {model}", "", f"Test: {meta['tests'][model]}.", "",
                  "| avg bits | plan | mean | vs dp | vs pool | vs HAWQ-V3 | vs uniform | vs best single backend |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            if row["model"] != model:
                continue
            lines.append(f"| {row['avg_bits']:g} | {row['plan']} | {row['mean']:.4f} | {_cell(row['vs_dp'])} | "
                         f"{_cell(row['vs_pool'])} | {_cell(row['vs_hawq-v3'])} | {_cell(row['vs_uniform'])} | "
                         f"{_best_cell(row)} |")
    return "\n".join(lines) + "\n"


def _jsonable(results: Mapping[str, Any]) -> Any:
    """The results without the per-example outcomes (kept as means)."""
    out: dict[str, Any] = {}
    for model, by_bits in results.items():
        out[model] = {}
        for avg, cells in by_bits.items():
            out[model][avg] = [{**{k: v for k, v in c.items() if k != "plans"},
                                "plans": {label: {**{k: v for k, v in p.items() if k != "outcomes"},
                                                  "test_mean": float(p["outcomes"].mean())}
                                          for label, p in c["plans"].items()}} for c in cells]
    return out


def save_cell(path: Path, cell: Mapping[str, Any]) -> None:
    """One finished (model, seed, bits) cell, outcomes as lists (a rerun skips it)."""
    from cetopt._atomic import atomic_write_text

    plain = {**cell, "plans": {label: {**p, "outcomes": p["outcomes"].tolist()} for label, p in cell["plans"].items()}}
    atomic_write_text(path, json.dumps(plain))


def load_cell(path: Path) -> dict[str, Any]:
    cell = json.loads(path.read_text())
    for plan in cell["plans"].values():
        plan["outcomes"] = np.asarray(plan["outcomes"], dtype=np.float64)
    return cell


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from cetopt._atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0", help="zoo training seeds (MobileNetV2: its one pretrained model)")
    parser.add_argument("--avg-bits", default=",".join(f"{b:g}" for b in AVG_BITS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="search forward budgets")
    parser.add_argument("--crops", type=int, default=384, help="MobileNetV2 test crops")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT), help="output path without extension")
    parser.add_argument("--cells", default=".cache/search-cells", help="finished cells are kept here; a rerun "
                        "with the same strategies and budgets reuses them")
    parser.add_argument("--cached-only", action="store_true", help="report the cells in --cells only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    strategies = [s for s in args.strategies.split(",") if s]
    budgets = [int(b) for b in args.budgets.split(",") if b]
    start = time.perf_counter()
    cells = Path(args.cells)
    cells.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    tests: dict[str, str] = {}
    for model in [m for m in args.models.split(",") if m]:
        results[model] = {}
        for seed in (seeds if model not in PRETRAINED else [0]):
            case = None
            for avg in [float(b) for b in args.avg_bits.split(",") if b]:
                path = cells / f"{model}-seed{seed}-{avg:g}bits-{'_'.join(strategies)}-{'_'.join(map(str, budgets))}.json"
                if path.is_file():  # a finished cell of an earlier (interrupted) run
                    cell = load_cell(path)
                elif args.cached_only:
                    continue
                else:
                    if case is None:
                        case = PRETRAINED[model](args.crops) if model in PRETRAINED else zoo_case(model, seed)
                    print(f"{model} seed {seed} @ {avg:g} bits", flush=True)
                    cell = run_cell(case, avg, strategies, budgets, seed)
                    cell["test"] = f"{case['metric']} on {case['test']}"
                    if case.get("clusters") is not None:  # per test example: its source (photo), for the CIs
                        cell["clusters"] = [str(c) for c in case["clusters"]]
                    save_cell(path, cell)
                tests[model] = cell["test"]
                results[model].setdefault(f"{avg:g}", []).append(cell)
    results = {model: by_bits for model, by_bits in results.items() if by_bits}
    labels = ["dp", "pool", "hawq-v3", "uniform"] + [f"{p}{s}@{b}" for s in strategies for b in budgets
                                                     for p in ("", "ship:")]
    rows = summarise(results, labels)
    curve_rows = curve(results, strategies, budgets)
    meta = {"command": "python benchmarks/search.py" + "".join(" " + a for a in (argv or [])),
            "seconds": time.perf_counter() - start, "torch_threads": args.threads,
            "seeds": {m: len(next(iter(by_bits.values()), [])) for m, by_bits in results.items()},
            "strategies": strategies, "budgets": budgets, "tests": tests}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"meta": meta, "rows": rows, "curve": curve_rows, "cells": _jsonable(results)}, indent=1, sort_keys=True))
    text = markdown(meta, rows, curve_rows, results)
    atomic_write_text(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

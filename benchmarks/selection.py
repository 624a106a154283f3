"""Measured selection (``cetopt plan``) against the default cost model's plan alone, HAWQ-V3 and uniform, at equal
budget, with paired bootstrap 95% CIs over per-example test outcomes.

Per model and budget (3, 4, 5 average bits) the plans are:

- ``cet-upper``: the default problem's dp optimum (what ``cetopt extract`` + ``solve`` give).
- ``rerank8``: the default problem's 8 best plans, the best measured one (re-ranking alone, no pool).
- ``select``: the default optimum and the default pool's plans (cetopt.rerank.DEFAULT_POOL: HAWQ-V3's), the best
  measured one: what ``cetopt plan`` ships.
- ``select+nograd``: the same with the curvature-only CET plan (cet-nograd) in the pool too.
- ``select8``: the default's 8 best plans and the default pool's, the best measured one.
- ``hawq-v3`` and ``uniform``: the baselines.

Selection measures the loss change on the model's validation batches (the zoo MobileNetV2's 32 validation crops of
4 validation photos, MiniLM's validation sentences of their own sources), never on the test set. The test sets are
those of benchmarks/cost_models_pretrained.py (MobileNetV2: 384 crops of 11 test photos, top-1 agreement with
FP32; MiniLM: the test sentences of other sources, cosine to FP32; CIs resample photos / sources) and the zoo's own
test sets (seed 0) for the trained zoo models. Every plan
is applied on the default problem's grid. Writes ``benchmarks/results/selection.{json,md}``::

    OMP_NUM_THREADS=2 python benchmarks/selection.py --cache-dir .cache/bench-signals
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_models_pretrained as pretrained  # noqa: E402  (the same cases, caches and priced problems)
from cetopt.costmodels.registry import DEFAULT_COST_MODEL  # noqa: E402

MODELS = ("mobilenetv2", "minilm", "digits-mlp", "digits-cnn", "mnist1d-resnet")
AVG_BITS = (3.0, 4.0, 5.0)
K = 8
PLANS = (DEFAULT_COST_MODEL, "rerank8", "select", "select+nograd", "select8", "hawq-v3", "uniform")
AGAINST = ("hawq-v3", "uniform", DEFAULT_COST_MODEL)
OUT = Path(__file__).resolve().parent / "results" / "selection"


def case_for(name: str, crops: int) -> dict[str, Any]:
    if name == "mobilenetv2":
        return pretrained.mobilenet_case(crops)
    return pretrained.minilm_case() if name == "minilm" else pretrained.zoo_case(name)


def plans_of(case: Mapping[str, Any], cache: Path | None) -> tuple[Any, dict[str, dict[str, Any]], str, float]:
    """(the default problem's BuiltProblem, budget -> plan label -> (bits, selection detail), split, seconds)."""
    from cetopt.baselines import uniform_bits
    from cetopt.builders.second_order import BuiltProblem
    from cetopt.measure import Measurer
    from cetopt.problem.model import Budget
    from cetopt.rerank import DEFAULT_POOL, rerank, selection_measure
    from cetopt.solvers.api import solve

    union, problems, _ = pretrained.cached_problems(case["spec"], cache)
    measurer = Measurer(case["spec"])
    measure, split = selection_measure(measurer)
    start = time.perf_counter()
    out: dict[str, dict[str, Any]] = {}
    for avg in AVG_BITS:
        budget = Budget(avg_bits=avg)
        default = BuiltProblem(problem=problems[DEFAULT_COST_MODEL].with_budget(budget), weights=union.weights)
        wanted = dict.fromkeys((DEFAULT_COST_MODEL, "hawq-v3", *DEFAULT_POOL, "cet-nograd"))
        solved = {m: solve(problems[m].with_budget(budget), "dp") for m in wanted}
        own = {m: dict(r.bits) for m, r in solved.items() if r.success}
        entry: dict[str, Any] = {DEFAULT_COST_MODEL: (own[DEFAULT_COST_MODEL], None)}
        if "hawq-v3" in own:
            entry["hawq-v3"] = (own["hawq-v3"], None)
        uniform = uniform_bits(default.problem, avg)
        if uniform is not None:
            entry["uniform"] = (uniform, None)
        for label, k, pool in (("rerank8", K, ()), ("select", 1, DEFAULT_POOL),
                               ("select+nograd", 1, DEFAULT_POOL + ("cet-nograd",)), ("select8", K, DEFAULT_POOL)):
            result = rerank(default, measure, k, "dp", pool={m: own[m] for m in pool if m in own})
            entry[label] = (dict(result.best.bits), {"returned": result.best.label, "candidates": [
                {"plan": p.label, "measured": p.measured, "predicted": p.predicted_loss} for p in result.plans]})
        out[f"{avg:g}"] = entry
    return default, out, split, time.perf_counter() - start


def run(name: str, crops: int, cache: Path | None) -> dict[str, Any]:
    from cetopt.measure import Measurer
    from cetopt.stats import paired_ci

    case = case_for(name, crops)
    clusters = case.get("clusters", {}).get(case["headline"])  # photos / sentence sources: CIs resample them
    default, by_budget, split, seconds = plans_of(case, cache)
    measurer = Measurer(case["spec"])
    head, sign = case["headline"], (-1.0 if case["headline"] in case["lower_is_better"] else 1.0)
    rows = []
    for avg, entry in by_budget.items():
        outcomes = {label: case["outcomes"](measurer.model_with(default.compressed_weights(bits)))[head]
                    for label, (bits, _) in entry.items()}
        for label in PLANS:
            if label not in outcomes:
                continue
            row: dict[str, Any] = {"model": name, "avg_bits": float(avg), "plan": label, "metric": head,
                                   "mean": float(outcomes[label].mean()), "n_test": int(outcomes[label].size),
                                   "selection": entry[label][1]}
            for other in AGAINST:
                if other == label or other not in outcomes:
                    continue
                ci = paired_ci(sign * outcomes[label], sign * outcomes[other], clusters, n_boot=4000, seed=0)
                row[f"vs_{other}"] = {"estimate": sign * ci.estimate, "low": min(sign * ci.low, sign * ci.high),
                                      "high": max(sign * ci.low, sign * ci.high), "ci_method": ci.method,
                                      "verdict": {"a": "better", "b": "worse", "tie": "tie"}[ci.verdict]}
            rows.append(row)
            print(f"  {name} @{avg} {label}: {row['mean']:.4f}", flush=True)
    return {"rows": rows, "split": split, "selection_seconds": seconds, "test": case["test"]}


def _cell(row: Mapping[str, Any], other: str) -> str:
    from cetopt.tables import ci_cell

    return ci_cell(row.get(f"vs_{other}"))


def markdown(results: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    lines = ["# Measured selection vs the default plan, HAWQ-V3 and uniform", "",
             f"`{meta['command']}`, {meta['seconds']:.0f} s, torch threads {meta['torch_threads']}. Generated by "
             "benchmarks/selection.py; do not edit by hand.", "",
             "Differences are in points (x100 of the metric), paired bootstrap 95% CIs over test examples; "
             "'better' / 'worse' when the CI excludes 0. Plans: see the script's docstring.", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", f"Test: {res['test']}. Selection measured on the {res['split']} batches "
                  f"({res['selection_seconds']:.0f} s for every budget's selections).", "",
                  f"| avg bits | plan | mean | vs HAWQ-V3 | vs uniform | vs {DEFAULT_COST_MODEL} | returned |",
                  "|---|---|---|---|---|---|---|"]
        for row in res["rows"]:
            returned = row["selection"]["returned"] if row["selection"] else ""
            lines.append(f"| {row['avg_bits']:g} | {row['plan']} | {row['mean']:.4f} | {_cell(row, 'hawq-v3')} | "
                         f"{_cell(row, 'uniform')} | {_cell(row, DEFAULT_COST_MODEL)} | {returned} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.curvature import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--crops", type=int, default=384, help="MobileNetV2 test crops")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="", help="the priced problems of cost_models_pretrained.py (reused)")
    parser.add_argument("--out", default=str(OUT), help="output path without extension")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {}
    for name in [m for m in args.models.split(",") if m]:
        cache = Path(args.cache_dir) / f"{name}-signals.pt" if args.cache_dir else None
        results[name] = run(name, args.crops, cache)
    from cetopt.rerank import DEFAULT_POOL
    from cetopt.workflow import DEFAULT_QUANTIZER

    meta = {"command": "python benchmarks/selection.py" + "".join(" " + a for a in (argv or [])),
            "default": DEFAULT_COST_MODEL, "pool": list(DEFAULT_POOL), "clip": DEFAULT_QUANTIZER.clip,
            "seconds": time.perf_counter() - start, "torch_threads": args.threads, "k": K, "avg_bits": list(AVG_BITS)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from cetopt.results.provenance import record_for

    version = record_for(out.with_suffix(".json").resolve(), "benchmarks/selection.py")
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "results": results,
                                                            "code_version": version}, indent=1, sort_keys=True))
    text = markdown(results, meta)
    atomic_write_text(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Whole-model plans with each rounding (issue 29, measurement c, on the models this machine can run without the
shared lock): the default pipeline's dp plan, HAWQ-V3's plan and the uniform plan, every one rounded and priced
with the same rounding, at 3 and 4 average bits; the headline test metric (accuracy on the digits models) and
per-example outcomes, so a paired bootstrap (cetopt.stats.paired_bootstrap_ci) compares any two cells.

One run per (model, rounding) writes ``benchmarks/results/rounding-plans/<model>-<rounding>.json``; the summary
``benchmarks/results/rounding-plans.{json,md}`` is rebuilt from every file present::

    OMP_NUM_THREADS=2 python benchmarks/rounding_plans.py --model digits-mlp --rounding gptq
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "rounding-plans"
AVG_BITS = (3.0, 4.0)


def run_joint(model: str, roundings: tuple[str, ...], groups: tuple[int, ...], clip: str) -> dict[str, Any]:
    """The default pipeline's dp plan of the joint problem: every (bits, group size, rounding) a candidate, sized with
    its scales (so its budget is stricter than the other rows', which leave per-channel scales out)."""
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    spec = load_model_spec(model)
    measurer = Measurer(spec)
    built = build_for(spec, budget=Budget(avg_bits=AVG_BITS[0]), rounding=roundings, group_sizes=groups,
                      quantizer=QuantizerSpec(clip=clip))
    label = f"joint {'+'.join(roundings)} g{'/'.join(map(str, groups))}@{clip}-grid"
    cells = []
    for avg in AVG_BITS:
        result = solve(built.problem.with_budget(Budget(avg_bits=avg)), "dp")
        m = measurer.measure(built.weights_for_choices(result.choices), outcomes=True)
        chosen = [layer.choices[result.choices[layer.name]].label for layer in built.problem.layers]
        cells.append({"model": model, "rounding": label, "avg_bits": avg, "plan": "default dp", "bits": chosen,
                      "metric_name": m.metric_name, "metric": m.metric,
                      "fp_metric": next(iter(measurer.fp_metrics.values()), None),
                      "validation_dloss": m.validation_dloss,
                      "outcomes": None if m.outcomes is None else m.outcomes.tolist()})
    return {"model": model, "rounding": label, "clip": clip, "cells": cells}


def run(model: str, rounding: str, clip: str, objective: str = "task") -> dict[str, Any]:
    from cetopt.baselines import hawq_v3_bits, hawq_v3_problem, uniform_bits
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.plan import problem_quantizer
    from cetopt.solvers.api import solve
    from cetopt.workflow import DEFAULT_BITS, build_for

    import time

    spec = load_model_spec(model, objective=objective)
    measurer = Measurer(spec)
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.workflow import DEFAULT_QUANTIZER

    start = time.perf_counter()

    grid = DEFAULT_QUANTIZER if clip == DEFAULT_QUANTIZER.clip else QuantizerSpec(clip=clip)
    built = build_for(spec, budget=Budget(avg_bits=AVG_BITS[0]), rounding=rounding, quantizer=grid)
    problem = built.problem
    hawq = hawq_v3_problem(spec, DEFAULT_BITS, quantizer=problem_quantizer(problem), rounding=rounding)
    build_seconds = time.perf_counter() - start
    cells = []
    for avg in AVG_BITS:
        plans = {"default dp": dict(solve(problem.with_budget(Budget(avg_bits=avg)), "dp").bits),
                 "hawq-v3": hawq_v3_bits(hawq, avg), "uniform": uniform_bits(problem, avg)}
        for name, bits in plans.items():
            if bits is None:
                continue
            m = measurer.measure(built.compressed_weights(bits), outcomes=True)
            cells.append({"model": model, "rounding": rounding if grid == DEFAULT_QUANTIZER else f"{rounding}@{clip}-grid",
                          "objective": objective, "avg_bits": avg, "plan": name, "bits": bits,
                          "metric_name": m.metric_name, "metric": m.metric,
                          "fp_metric": next(iter(measurer.fp_metrics.values()), None),
                          "validation_dloss": m.validation_dloss,
                          "outcomes": None if m.outcomes is None else m.outcomes.tolist()})
    return {"model": model, "rounding": rounding, "clip": clip, "objective": objective, "cells": cells,
            "build_seconds": build_seconds,
            "clusters": None if spec.test_clusters is None else list(spec.test_clusters)}


def _ci(a: dict[str, Any] | None, b: dict[str, Any] | None, clusters: Any) -> str:
    """'estimate [low, high]' of mean(a) - mean(b) over the same test examples, clustered by source where the spec
    has sources (cetopt.stats.paired_ci); '-' when either has no outcomes."""
    from cetopt.stats import paired_ci

    if a is None or b is None or a is b or not a.get("outcomes") or not b.get("outcomes"):
        return "-"
    ci = paired_ci(np.array(a["outcomes"]), np.array(b["outcomes"]), clusters)
    return f"{ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"


def write(results: list[dict[str, Any]], command: str) -> None:
    from cetopt._atomic import atomic_write_text
    from cetopt.tables import format_table

    rows = []
    for r in results:
        for c in r["cells"]:
            c.setdefault("objective", r.get("objective", "task"))
    cells = [(c, r.get("clusters")) for r in results for c in r["cells"]]

    def find(model: str, avg: float, objective: str, rounding: str, plan: str) -> dict[str, Any] | None:
        return next((b for b, _ in cells if b["model"] == model and b["avg_bits"] == avg and b["objective"] == objective
                     and b["rounding"] == rounding and b["plan"] == plan), None)

    for c, clusters in cells:
        key = (c["model"], c["avg_bits"])
        same = find(*key, c["objective"], c["rounding"], "default dp")
        base = find(*key, "task", "nearest", "default dp")
        nearest = find(*key, c["objective"], "nearest", c["plan"])
        rows.append([c["model"], f"{c['avg_bits']:g}", c["objective"], c["rounding"], c["plan"], f"{c['metric']:.4f}",
                     f"{c['metric'] - c['fp_metric']:+.4f}", f"{c['validation_dloss']:+.5f}",
                     _ci(c, same, clusters), _ci(c, nearest, clusters), _ci(c, base, clusters)])
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3], r[4]))
    summary = [{k: v for k, v in c.items() if k != "outcomes"} for c, _ in cells]  # outcomes: in the per-run files
    atomic_write_text(OUT.with_suffix(".json"), json.dumps({"command": command, "cells": summary}, indent=1) + "\n")
    builds = [f"{r['model']} {r.get('objective', 'task')} {r['rounding']}: {r['build_seconds']:.0f} s"
              for r in results if "build_seconds" in r]
    lines = ["# Whole-model plans with each rounding", "",
             f"Written by `{command}` (benchmarks/rounding_plans.py; its docstring says how). Every plan (the "
             "default pipeline's dp plan, HAWQ-V3's, uniform) is priced and applied with the rounding of its row, on "
             "the default grid (MSE clipping) unless the row says @none-grid (range max|w|). Objective: the loss the "
             "problem minimises, the zoo's task loss or the fidelity to the FP32 outputs (cetopt.losses, labels "
             "dropped). Metric: the zoo's test metric (digits: accuracy; MobileNetV2: top-1 agreement with FP32). CIs: "
             "paired bootstrap 95% (cetopt.stats.paired_ci, 2000 resamples; resampling photos or sentence sources "
             "where the spec names them, else test examples), one zoo seed: the row's metric minus that of the "
             "default dp plan with the same objective and rounding, minus that of the same plan and objective with "
             "nearest rounding, and minus that of the default dp plan with the task loss and nearest rounding.", "",
             format_table(["model", "avg bits", "objective", "rounding", "plan", "metric", "vs FP32", "validation dL",
                           "vs default dp (same objective, rounding)", "vs nearest (same objective, plan)",
                           "vs default+task+nearest"], rows), "",
             "Build seconds (curvature, candidates of every bit-width, HAWQ-V3's problem; 2 cores, one run): "
             + ("; ".join(builds) if builds else "not recorded") + ".", ""]
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--rounding")
    parser.add_argument("--report-only", action="store_true", help="rebuild the summary from the per-run files")
    parser.add_argument("--clip", choices=("none", "mse"), default="mse", help="the grid (default: the default "
                        "quantiser's, MSE clipping)")
    parser.add_argument("--objective", choices=("task", "fidelity"), default="task",
                        help="what the problems minimise: the zoo's task loss or the fidelity to FP32 (labels dropped)")
    parser.add_argument("--group-sizes", default="", help="joint problem: these scale layouts (e.g. 0,32) x the "
                        "comma-separated --rounding list, the default dp plan only")
    args = parser.parse_args(argv)
    from cetopt._atomic import atomic_write_text

    OUT.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        pass
    elif not (args.model and args.rounding):
        parser.error("--model and --rounding are required (or --report-only)")
    elif args.group_sizes:
        roundings = tuple(args.rounding.split(","))
        result = run_joint(args.model, roundings, tuple(int(g) for g in args.group_sizes.split(",")), args.clip)
        suffix = f"-g{args.group_sizes.replace(',', '-')}-{args.clip}-grid"
        args.rounding = "+".join(roundings)
    else:
        result = run(args.model, args.rounding, args.clip, args.objective)
        suffix = ("" if args.clip == "mse" else f"-{args.clip}-grid") + \
            ("" if args.objective == "task" else f"-{args.objective}")
    if not args.report_only:
        atomic_write_text(OUT / f"{args.model}-{args.rounding}{suffix}.json", json.dumps(result) + "\n")
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    write(results, "python benchmarks/rounding_plans.py --model MODEL --rounding ROUNDING[,ROUNDING] [--clip none] "
                   "[--objective fidelity] [--group-sizes 0,32], once per file in "
                   "benchmarks/results/rounding-plans/")


if __name__ == "__main__":
    main()

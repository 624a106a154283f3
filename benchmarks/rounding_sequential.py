"""Sequential rounding (GPTQ's order) against independent rounding (issue 29), the same plans on both sides.

Independent: every layer rounded on the Gram matrix of the FP32 model's inputs (what the problems price and what
`cetopt apply` ships by default). Sequential: each layer rounded after the layers upstream of it are compressed,
on the Gram matrix of the inputs that partly quantised model produces (cetopt.quant.rounding.sequential), with the
layer's FP32 weights as the target (mode "sequential": GPTQ's order and objective, `cetopt apply
--sequential-rounding`) or the FP32 model's outputs of the layer (mode "sequential-fp32": least-squares weights W*
rounded the same way).

Zoo models (digits-mlp, digits-cnn, mnist1d-resnet; zoo seeds 0..4): per seed and rounding (gptq, adaround) the
default pipeline's problem is built with that rounding (candidates priced after it, default MSE-clipped grid), and
the dp plan and the uniform plan at 3 and 4 average bits are applied both ways. Independent weights are the priced
candidates (checked bit for bit against apply_plan on the FP32 Gram matrices). Reported: test accuracy and the
validation loss change (batches held out from calibration), sequential minus independent, paired by seed (Student-t
95% CI over seeds, cetopt.stats.paired_seed_ci) and pooled over (seed, test example) pairs (paired bootstrap, 2000
resamples).

MobileNetV2 (ImageNet weights, fidelity objective): the plans are read from benchmarks/results/rounding-plans/
(the default dp and uniform plans that rounding_plans.py built and priced with the same rounding), applied both
ways; top-1 agreement with FP32 on the test crops with a paired bootstrap clustered by photo (cetopt.stats.paired_ci).
The independent row must reproduce rounding-plans' metric (recorded as ``reproduces``).

One run per model writes ``benchmarks/results/rounding-sequential/<model>[-<rounding>].json``; the summary
``benchmarks/results/rounding-sequential.{json,md}`` is rebuilt from every file present::

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/rounding_sequential.py --models digits-mlp
    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/rounding_sequential.py \\
        --models mobilenetv2 --roundings gptq
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

ZOO = ("digits-mlp", "digits-cnn", "mnist1d-resnet")
SEEDS = (0, 1, 2, 3, 4)
AVG_BITS = (3.0, 4.0)
ROUNDINGS = ("gptq", "adaround")
PLANS = ("default dp", "uniform")
RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "rounding-sequential"
PLANS_DIR = RESULTS / "rounding-plans"


def as_plan(bits: Mapping[str, int], rounding: str, quantizer: Any) -> Any:
    """A cetopt.quant.plan.Plan rounding every layer of ``bits`` by ``rounding`` (1-bit layers: nearest)."""
    from cetopt.quant.plan import LayerChoice, Plan

    return Plan(layers={n: LayerChoice(int(b), rounding=rounding if b >= 2 else "nearest") for n, b in bits.items()},
                quantizer=quantizer)


MODES = {"sequential": "layer", "sequential-fp32": "fp32"}  # mode -> cetopt.quant.rounding.sequential target


def sequential_weights(spec: Any, plan: Any, target: str) -> tuple[dict[str, Any], float]:
    """(layer -> weight of ``plan`` rounded sequentially with ``target``, seconds it took)."""
    from cetopt.quant.rounding.sequential import sequential_apply

    start = time.perf_counter()
    weights = sequential_apply(spec.model, plan, spec.loss_fn, spec.calibration, target=target)
    return weights, time.perf_counter() - start


def pack_outcomes(values: Any) -> Any:
    """Per-example outcomes for the JSON file: a string of '0'/'1' when every outcome is 0 or 1 (accuracy,
    agreement: a fifth of the size), else the list of floats."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    if np.isin(values, (0.0, 1.0)).all():
        return "".join("1" if v else "0" for v in values)
    return values.tolist()


def unpack_outcomes(stored: Any) -> np.ndarray:
    """Inverse of :func:`pack_outcomes`."""
    if isinstance(stored, str):
        return np.frombuffer(stored.encode(), dtype=np.uint8).astype(np.float64) - ord("0")
    return np.asarray(stored, dtype=np.float64)


def cell(measurer: Any, weights: Mapping[str, Any], **keys: Any) -> dict[str, Any]:
    m = measurer.measure(weights, outcomes=True)
    return {**keys, "metric_name": m.metric_name, "metric": m.metric,
            "fp_metric": next(iter(measurer.fp_metrics.values()), None), "validation_dloss": m.validation_dloss,
            "calibration_dloss": m.calibration_dloss, "outcomes": pack_outcomes(m.outcomes)}


def changed_layers(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    import torch

    return sum(not torch.equal(a[n].float(), b[n].float()) for n in a)


def run_zoo(model: str, seed: int, rounding: str) -> list[dict[str, Any]]:
    """Every (avg bits, plan, mode) cell of one zoo model, seed and rounding."""
    import torch

    from cetopt.baselines import uniform_bits
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.adaround import layer_grams
    from cetopt.quant.apply import apply_plan
    from cetopt.quant.plan import problem_quantizer
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    spec = load_model_spec(model, seed=seed)
    measurer = Measurer(spec)
    start = time.perf_counter()
    built = build_for(spec, budget=Budget(avg_bits=AVG_BITS[0]), rounding=rounding)
    build_seconds = time.perf_counter() - start
    quantizer = problem_quantizer(built.problem)
    names = [layer.name for layer in built.problem.layers]
    fp32_grams = layer_grams(spec.model, names, spec.loss_fn, spec.calibration)
    cells = []
    for avg in AVG_BITS:
        plans = {"default dp": dict(solve(built.problem.with_budget(Budget(avg_bits=avg)), "dp").bits),
                 "uniform": uniform_bits(built.problem, avg)}
        for plan_name, bits in plans.items():
            if bits is None:
                continue
            plan = as_plan(bits, rounding, quantizer)
            independent = built.compressed_weights(bits)
            check = apply_plan(spec.model, plan, grams=fp32_grams).weights
            if any(not torch.equal(check[n].to(independent[n].dtype), independent[n]) for n in independent):
                raise SystemExit(f"{model} seed {seed}: apply_plan does not reproduce the priced candidates")
            keys = {"model": model, "seed": seed, "rounding": rounding, "avg_bits": avg, "plan": plan_name,
                    "bits": bits, "build_seconds": build_seconds}
            cells.append(cell(measurer, independent, **keys, mode="independent"))
            for mode, target in MODES.items():
                sequential, seconds = sequential_weights(spec, plan, target)
                cells.append(cell(measurer, sequential, **keys, mode=mode, gram_seconds=seconds,
                                  changed_layers=changed_layers(sequential, independent), layers=len(bits)))
            print(f"{model} s{seed} {rounding} {avg:g} {plan_name}: independent {cells[-3]['metric']:.4f} "
                  f"sequential {cells[-2]['metric']:.4f} fp32-target {cells[-1]['metric']:.4f}", file=sys.stderr,
                  flush=True)
    return cells


def run_pretrained(model: str, rounding: str, save: Any = None) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The cells of ``model`` (mobilenetv2) from the plans rounding_plans.py recorded for ``rounding`` (fidelity
    objective), and the spec's test clusters; ``save(cells, clusters)`` is called after each plan."""
    from cetopt.builders.second_order import rounding_grams
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.quant.apply import apply_plan
    from cetopt.workflow import DEFAULT_QUANTIZER

    source = PLANS_DIR / f"{model}-{rounding}-fidelity.json"
    if not source.exists():
        raise SystemExit(f"{source} is missing: run benchmarks/rounding_plans.py --model {model} --rounding "
                         f"{rounding} --objective fidelity first")
    recorded = json.loads(source.read_text())
    spec = load_model_spec(model, objective="fidelity")
    measurer = Measurer(spec)
    cells = []
    fp32_grams = None
    for c in recorded["cells"]:
        if c["plan"] not in PLANS or c["avg_bits"] not in AVG_BITS:
            continue
        plan = as_plan(c["bits"], rounding, DEFAULT_QUANTIZER)
        if fp32_grams is None:
            fp32_grams = rounding_grams(spec.model, spec.loss_fn, spec.calibration, list(plan.layers), rounding)
        independent = dict(apply_plan(spec.model, plan, grams=fp32_grams).weights)
        keys = {"model": model, "seed": 0, "rounding": rounding, "avg_bits": c["avg_bits"], "plan": c["plan"],
                "bits": c["bits"], "plans_from": str(source.relative_to(RESULTS.parent.parent))}
        ind = cell(measurer, independent, **keys, mode="independent")
        ind["reproduces"] = ind["metric"] == c["metric"]
        cells.append(ind)
        for mode, target in MODES.items():
            sequential, seconds = sequential_weights(spec, plan, target)
            cells.append(cell(measurer, sequential, **keys, mode=mode, gram_seconds=seconds,
                              changed_layers=changed_layers(sequential, independent), layers=len(c["bits"])))
            print(f"{model} {rounding} {c['avg_bits']:g} {c['plan']}: independent {ind['metric']:.4f} (recorded "
                  f"{c['metric']:.4f}) {mode} {cells[-1]['metric']:.4f} ({seconds:.0f} s)", file=sys.stderr,
                  flush=True)
        if save is not None:  # plan by plan: a run stopped by its timeout keeps what it measured
            save(cells, None if spec.test_clusters is None else list(spec.test_clusters))
    return cells, None if spec.test_clusters is None else list(spec.test_clusters)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, avg bits, plan, rounding, sequential mode): that mode minus independent, paired by seed
    and by test example."""
    from cetopt.stats import paired_ci, paired_seed_ci

    cells = [(c, r.get("clusters")) for r in results for c in r["cells"]]
    keys = sorted({(c["model"], c["avg_bits"], c["plan"], c["rounding"]) for c, _ in cells})
    rows = []
    for key, mode in ((k, m) for k in keys for m in MODES):
        mine = [(c, cl) for c, cl in cells if (c["model"], c["avg_bits"], c["plan"], c["rounding"]) == key]
        seeds = sorted({c["seed"] for c, _ in mine})
        pair = {s: {c["mode"]: c for c, _ in mine if c["seed"] == s} for s in seeds}
        seeds = [s for s in seeds if {"independent", mode} <= set(pair[s])]
        if not seeds:
            continue
        seq = [pair[s][mode] for s in seeds]
        ind = [pair[s]["independent"] for s in seeds]
        clusters = next(cl for c, cl in mine)
        row = {"model": key[0], "avg_bits": key[1], "plan": key[2], "rounding": key[3], "mode": mode,
               "seeds": len(seeds), "metric_name": seq[0]["metric_name"],
               "independent": float(np.mean([c["metric"] for c in ind])),
               "sequential": float(np.mean([c["metric"] for c in seq])),
               "independent_dloss": float(np.mean([c["validation_dloss"] for c in ind])),
               "sequential_dloss": float(np.mean([c["validation_dloss"] for c in seq])),
               "changed_layers": f"{np.mean([c['changed_layers'] for c in seq]):.1f}/{seq[0]['layers']}",
               "seconds": float(np.mean([c["gram_seconds"] for c in seq]))}
        if all(c.get("outcomes") for c in seq + ind):
            # pooled over (seed, example) pairs; clustered by photo where the spec has photos (one seed then)
            a = np.concatenate([unpack_outcomes(c["outcomes"]) for c in seq])
            b = np.concatenate([unpack_outcomes(c["outcomes"]) for c in ind])
            ci = paired_ci(a, b, clusters if len(seeds) == 1 else None)
            row["metric_diff"] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "method": ci.method}
        if len(seeds) > 1:
            s, verdict = paired_seed_ci([c["metric"] for c in seq], [c["metric"] for c in ind])
            row["metric_diff_seeds"] = {"estimate": s.mean, "low": s.low, "high": s.high, "verdict": verdict}
            s, verdict = paired_seed_ci([c["validation_dloss"] for c in seq], [c["validation_dloss"] for c in ind])
            row["dloss_diff_seeds"] = {"estimate": s.mean, "low": s.low, "high": s.high, "verdict": verdict}
        if any("reproduces" in c for c in ind):
            row["independent_reproduces_rounding_plans"] = all(c.get("reproduces") for c in ind)
        rows.append(row)
    return rows


def _ci(d: Mapping[str, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not d:
        return "-"
    return f"{d['estimate'] * scale:+.{digits}f} [{d['low'] * scale:+.{digits}f}, {d['high'] * scale:+.{digits}f}]"


def write(results: list[dict[str, Any]], command: str) -> None:
    from cetopt._atomic import atomic_write_text
    from cetopt.tables import format_table

    rows = summarise(results)
    atomic_write_text(OUT.with_suffix(".json"), json.dumps({"command": command, "summary": rows}, indent=1) + "\n")
    table = [[r["model"], f"{r['avg_bits']:g}", r["plan"], r["rounding"], r["mode"], r["seeds"], r["metric_name"],
              f"{r['independent']:.4f}", f"{r['sequential']:.4f}", _ci(r.get("metric_diff"), 100),
              _ci(r.get("metric_diff_seeds"), 100), f"{r['independent_dloss']:+.5f}", f"{r['sequential_dloss']:+.5f}",
              _ci(r.get("dloss_diff_seeds"), 1, 5), r["changed_layers"], f"{r['seconds']:.1f}"] for r in rows]
    repro = [f"{r['model']} {r['avg_bits']:g} {r['plan']} {r['rounding']}: "
             f"{'yes' if r['independent_reproduces_rounding_plans'] else 'NO'}"
             for r in rows if "independent_reproduces_rounding_plans" in r and r["mode"] == "sequential"]
    lines = ["# Sequential vs independent rounding", "",
             f"Written by `{command}` (benchmarks/rounding_sequential.py; its docstring says how). The same plan "
             "applied with independent rounding (every layer on the FP32 model's input Gram matrix, as priced) and "
             "sequentially in GPTQ's order, each layer on the Gram matrix of the inputs the model with its upstream "
             "layers already quantised produces, with two targets: mode 'sequential' keeps the layer's FP32 weights "
             "on those inputs as the target (GPTQ's; what `cetopt apply --sequential-rounding` ships), mode "
             "'sequential-fp32' fits the FP32 model's outputs of the layer from those inputs (least-squares weights "
             "W*, then the same rounding; library and benchmark only). Metric: test accuracy (zoo) or top-1 "
             "agreement with FP32 on the test crops (MobileNetV2, fidelity objective, plans from "
             "rounding-plans.json). Differences are sequential minus independent, in points: 'pooled' is a paired "
             "bootstrap 95% CI over (seed, test example) pairs, clustered by photo for MobileNetV2; 'by seed' a "
             "Student-t 95% CI over the per-seed differences. Validation dL: mean loss change on the validation "
             "batches (held out from calibration). Changed layers: layers whose sequential weights differ from the "
             "independent ones (mean over seeds). Seconds: the sequential rounding of the whole plan (Gram "
             "matrices and rounding; 2 threads, under the shared lock).", "",
             format_table(["model", "avg bits", "plan", "rounding", "mode", "seeds", "metric", "independent", "sequential",
                           "diff, pooled (points)", "diff, by seed (points)", "indep. dL", "seq. dL",
                           "dL diff, by seed", "changed layers", "seconds"], table), ""]
    runs = [f"{r['model']} {r['rounding']}: {len({(c['seed'], c['avg_bits'], c['plan']) for c in r['cells']})} "
            f"(seed, bits, plan) cells over {len({c['seed'] for c in r['cells']})} seed(s) in {r['seconds']:.0f} s"
            for r in results]
    lines += ["Runs (each file in benchmarks/results/rounding-sequential/; a run stopped by its timeout keeps the "
              "plans it finished, the rest are absent from the table): " + "; ".join(runs) + ".", ""]
    if repro:
        lines += ["Independent rows reproduce rounding-plans.md's metric for the same plan: " + "; ".join(repro) + ".",
                  ""]
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--roundings", default=",".join(ROUNDINGS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="zoo seeds (zoo models only)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the summary from the per-run files")
    args = parser.parse_args(argv)
    import torch

    from cetopt._atomic import atomic_write_text

    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    roundings = [r for r in args.roundings.split(",") if r]
    for model in ([] if args.report_only else args.models.split(",")):
        for rounding in roundings:
            start = time.perf_counter()

            def save(cells: list[dict[str, Any]], clusters: list[Any] | None) -> None:
                atomic_write_text(OUT / f"{model}-{rounding}.json", json.dumps(
                    {"model": model, "rounding": rounding, "cells": cells, "clusters": clusters,
                     "seconds": time.perf_counter() - start}) + "\n")

            if model in ZOO:
                cells = []
                for seed in args.seeds.split(","):  # saved seed by seed: a run stopped by its timeout keeps them
                    cells += run_zoo(model, int(seed), rounding)
                    save(cells, None)
            else:
                save(*run_pretrained(model, rounding, save))
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    write(results, "python benchmarks/rounding_sequential.py --models MODEL[,MODEL] --roundings R[,R], under the "
                   "shared lock, once per file in benchmarks/results/rounding-sequential/")


if __name__ == "__main__":
    main()

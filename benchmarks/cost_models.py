"""Which cost model should be the default? Every cost model's plan on the zoo's trained models, at equal packed size,
measured on held-out test data with paired bootstrap CIs, plus how well each model's whole-plan prediction tracks
the measured loss change across many plans.

For each model (digits-mlp, digits-cnn, mnist1d-resnet) and zoo seed (0, 1, 2):

1. Build one problem per cost model (same candidates: nearest rounding, bits 2,3,4,6,8) and solve it with dp at
   3 and 4 average bits; add uniform 3/4-bit and ``RANDOM_PLANS`` random plans (bits from 3,4,6,8) as a pool.
2. Measure every distinct plan: test outcomes (1 = correct, per example), calibration and validation loss change.
3. Per cost model: each plan's predicted loss change vs its measured one (Spearman, sign agreement).
4. Per (model, bits, method): test accuracy pooled over seeds, and the paired bootstrap CI of the difference
   to HAWQ-V3, uniform and plain cet (examples paired within a seed; the pool is resampled jointly).

Writes ``benchmarks/results/cost_models.json`` (every row) and ``.md`` (the tables). Usage::

    OMP_NUM_THREADS=1 python benchmarks/cost_models.py [--models digits-mlp,...] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cetopt.tables import ci_cell

METHODS = ("cet", "cet-nograd", "cet-shrink", "cet-holdout", "measured", "measured-shrink", "cet-upper", "cet-trust", "hawq-v3")
MODELS = ("digits-mlp", "digits-cnn", "mnist1d-resnet")
CLIP = "mse"  # the candidates' clipping for every method and plan (--clip): "mse" (the default grid) or "none" (max |w|)
AVG_BITS = (3.0, 4.0)
RANDOM_PLANS = 10
BASELINES = ("hawq-v3", "uniform", "cet")  # each method's accuracy difference to these, with a paired CI
OUT = Path(__file__).resolve().parent / "results"


def _plan_key(bits: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(bits.items()))


def _plans(built: Mapping[str, Any], seed: int) -> dict[str, dict[str, int]]:
    """Label -> plan: each method's dp plan at each budget, uniform, and random plans."""
    from cetopt.baselines import uniform_bits
    from cetopt.problem.model import Budget
    from cetopt.solvers.api import solve

    plans: dict[str, dict[str, int]] = {}
    for method, b in built.items():
        for avg in AVG_BITS:
            result = solve(b.problem.with_budget(Budget(avg_bits=avg)), "dp")
            if result.success:
                plans[f"{method}@{avg:g}"] = dict(result.bits)
    reference = built[METHODS[0]].problem
    for avg in AVG_BITS:
        uniform = uniform_bits(reference, avg)
        if uniform is not None:
            plans[f"uniform@{avg:g}"] = uniform
    rng = np.random.default_rng(1000 + seed)
    for i in range(RANDOM_PLANS):
        plans[f"random{i}"] = {layer.name: int(rng.choice((3, 4, 6, 8))) for layer in reference.layers}
    return plans


def _measure(spec: Any, built: Any, plans: Mapping[str, Mapping[str, int]]) -> dict[tuple, dict[str, Any]]:
    """Plan key -> test outcomes (n_test,), calibration / validation loss change, avg bits actually used."""
    from cetopt.measure import Measurer
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    measurer = Measurer(spec)
    outcomes_fn = spec.test_outcomes
    out: dict[tuple, dict[str, Any]] = {}
    for bits in plans.values():
        key = _plan_key(bits)
        if key in out:
            continue
        weights = built.compressed_weights(bits)
        model = measurer.model_with(weights)
        outcomes = np.asarray(outcomes_fn(model), dtype=np.float64)
        used = evaluate(built.problem, choices_from_bits(built.problem, bits)).avg_bits
        out[key] = {"outcomes": outcomes, "calibration_dloss": measurer.calibration_dloss(weights),
                    "validation_dloss": measurer.validation_dloss(weights), "avg_bits_used": float(used)}
    return out


def _predictions(built: Mapping[str, Any], plans: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float]]:
    """Method -> plan label -> the method's predicted whole-plan loss change (its own problem's costs)."""
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    return {method: {label: float(evaluate(b.problem, choices_from_bits(b.problem, bits)).loss)
                     for label, bits in plans.items()} for method, b in built.items()}


def run_model_seed(model: str, seed: int) -> dict[str, Any]:
    """Every plan of one (model, seed): labels, bits, measurements, each method's predictions, timings."""
    from cetopt.modelspec import load_model_spec
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.workflow import DEFAULT_BITS, build_for

    spec = load_model_spec(model, seed=seed)
    built, seconds = {}, {}
    for method in METHODS:
        start = time.perf_counter()
        built[method] = build_for(spec, method=method, bits=DEFAULT_BITS, quantizer=QuantizerSpec(clip=CLIP))
        seconds[method] = time.perf_counter() - start
    plans = _plans(built, seed)
    measured = _measure(spec, built["cet-nograd"], plans)
    predictions = _predictions(built, plans)
    rows = []
    for label, bits in plans.items():
        m = measured[_plan_key(bits)]
        rows.append({"model": model, "seed": seed, "plan": label, "bits": bits, "accuracy": float(m["outcomes"].mean()),
                     "avg_bits_used": m["avg_bits_used"], "calibration_dloss": m["calibration_dloss"],
                     "validation_dloss": m["validation_dloss"],
                     "predicted": {method: predictions[method][label] for method in METHODS}})
    outcomes = {label: measured[_plan_key(bits)]["outcomes"] for label, bits in plans.items()}
    return {"rows": rows, "outcomes": outcomes, "build_seconds": seconds}


def _prediction_quality(rows: Sequence[Mapping[str, Any]], method: str, target: str) -> dict[str, float]:
    """Spearman rank correlation and sign agreement of ``method``'s predictions with ``target`` over ``rows``."""
    from scipy.stats import spearmanr

    predicted = np.array([r["predicted"][method] for r in rows])
    measured = np.array([r[target] for r in rows])
    rho = float(spearmanr(predicted, measured).statistic) if len(rows) > 2 else float("nan")
    return {"spearman": rho, "sign_agreement": float(np.mean(np.sign(predicted) == np.sign(measured))),
            "plans": len(rows)}


def _comparisons(runs: Mapping[int, Mapping[str, Any]], model: str, avg: float) -> list[dict[str, Any]]:
    """Per method at ``avg`` bits: pooled accuracy over seeds and paired CIs vs hawq-v3 and uniform."""
    from cetopt.stats import paired_bootstrap_ci

    def pooled(label: str) -> np.ndarray | None:
        parts = [run["outcomes"].get(label) for run in runs.values()]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    out = []
    for method in METHODS + ("uniform",):
        mine = pooled(f"{method}@{avg:g}")
        if mine is None:
            continue
        used = [r["avg_bits_used"] for run in runs.values() for r in run["rows"] if r["plan"] == f"{method}@{avg:g}"]
        row: dict[str, Any] = {"model": model, "avg_bits": avg, "method": method, "accuracy": float(mine.mean()),
                               "n_test": int(mine.size), "avg_bits_used_min": float(min(used))}
        for baseline in BASELINES:
            other = pooled(f"{baseline}@{avg:g}")
            if other is not None and baseline != method:
                ci = paired_bootstrap_ci(mine, other, n_boot=2000, seed=0)
                row[f"vs_{baseline}"] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high,
                                         "verdict": {"a": "better", "b": "worse", "tie": "tie"}[ci.verdict]}
        out.append(row)
    return out


def summarise(all_runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Comparisons, prediction quality per (model, method), and an overall ranking of the methods."""
    comparisons = [row for model, runs in all_runs.items() for avg in AVG_BITS for row in _comparisons(runs, model, avg)]
    quality = []
    for model, runs in all_runs.items():
        rows = [r for run in runs.values() for r in run["rows"]]
        for method in METHODS:
            per_seed = [_prediction_quality(run["rows"], method, "validation_dloss") for run in runs.values()]
            quality.append({"model": model, "method": method,
                            "spearman_validation": float(np.mean([q["spearman"] for q in per_seed])),
                            "spearman_validation_min": float(np.min([q["spearman"] for q in per_seed])),
                            "sign_agreement_validation": float(np.mean([q["sign_agreement"] for q in per_seed])),
                            "spearman_calibration": float(np.mean([_prediction_quality(run["rows"], method,
                                                                   "calibration_dloss")["spearman"]
                                                                   for run in runs.values()])),
                            "plans_per_seed": len(rows) // max(len(runs), 1)})
    ranking = []
    for method in METHODS:
        mine = [c for c in comparisons if c["method"] == method and "vs_hawq-v3" in c]
        gains = [c["vs_hawq-v3"]["estimate"] for c in mine]
        ranking.append({"method": method, "mean_gain_vs_hawq_v3": float(np.mean(gains)) if gains else 0.0,
                        "better": sum(c["vs_hawq-v3"]["verdict"] == "better" for c in mine),
                        "worse": sum(c["vs_hawq-v3"]["verdict"] == "worse" for c in mine),
                        "cells": len(mine),
                        "better_than_cet": sum(c.get("vs_cet", {}).get("verdict") == "better" for c in mine),
                        "worse_than_cet": sum(c.get("vs_cet", {}).get("verdict") == "worse" for c in mine),
                        "mean_spearman": float(np.mean([q["spearman_validation"] for q in quality
                                                        if q["method"] == method]))})
    ranking.sort(key=lambda r: (r["worse"], -r["mean_gain_vs_hawq_v3"]))
    return {"comparisons": comparisons, "prediction": quality, "ranking": ranking}


def markdown(summary: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """The tables of ``summary`` (accuracy in %, CI differences in points)."""
    lines = ["# Cost models at equal size: which one should be the default?", "",
             f"Generated by `{meta['command']}` in {meta['seconds']:.0f} s; models {', '.join(meta['models'])}, "
             f"zoo seeds {meta['seeds']}, dp at {', '.join(f'{a:g}' for a in AVG_BITS)} average bits. Test accuracy "
             "pooled over seeds; differences are paired bootstrap 95% CIs (points) over the pooled test examples. "
             "'min avg bits used' below the budget means a plan stopped short of its size (negative costs or no "
             "candidate fitting the slack); every method is compared at the budget, and the size it used is shown."
             + (" **Every candidate and plan is on the MSE-clipped grid** (`--clip mse`), costs priced there."
                if meta.get("clip") == "mse" else ""), "",
             "## Test accuracy at equal packed size", "",
             "| model | bits | method | accuracy % | min avg bits used | vs HAWQ-V3 | vs uniform | vs cet |",
             "|---|---|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        lines.append(f"| {c['model']} | {c['avg_bits']:g} | {c['method']} | {100 * c['accuracy']:.2f} | "
                     f"{c['avg_bits_used_min']:.3f} | {ci_cell(c.get('vs_hawq-v3'))} | {ci_cell(c.get('vs_uniform'))} | "
                     f"{ci_cell(c.get('vs_cet'))} |")
    lines += ["", "## Whole-plan prediction: predicted vs measured validation loss change across plans", "",
              f"Plans per seed: every method's plan at each budget, uniform, {RANDOM_PLANS} random plans; Spearman is "
              "the mean over seeds (min in brackets).", "",
              "| model | cost model | Spearman (validation) | sign agreement | Spearman (calibration) |", "|---|---|---|---|---|"]
    for q in summary["prediction"]:
        lines.append(f"| {q['model']} | {q['method']} | {q['spearman_validation']:.3f} ({q['spearman_validation_min']:.3f})"
                     f" | {q['sign_agreement_validation']:.2f} | {q['spearman_calibration']:.3f} |")
    lines += ["", "## Ranking (fewest CI losses to HAWQ-V3, then largest mean gain)", "",
              "| method | mean gain vs HAWQ-V3 (points) | better | worse | better than cet | worse than cet | cells | "
              "mean Spearman |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["ranking"]:
        lines.append(f"| {r['method']} | {100 * r['mean_gain_vs_hawq_v3']:+.2f} | {r['better']} | {r['worse']} | "
                     f"{r['better_than_cet']} | {r['worse_than_cet']} | {r['cells']} | {r['mean_spearman']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    global CLIP
    import torch

    from cetopt._atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(OUT / "cost_models"), help="output path without extension")
    parser.add_argument("--clip", choices=("none", "mse"), default=CLIP,
                        help="the candidates' quantiser for every method and plan (cetopt extract --clip)")
    args = parser.parse_args(argv)
    CLIP = args.clip
    torch.set_num_threads(1)
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    start = time.perf_counter()
    all_runs: dict[str, dict[int, Any]] = {}
    for model in models:
        for seed in seeds:
            t0 = time.perf_counter()
            all_runs.setdefault(model, {})[seed] = run_model_seed(model, seed)
            print(f"{model} seed {seed}: {time.perf_counter() - t0:.1f} s", flush=True)
    summary = summarise(all_runs)
    given = sys.argv[1:] if argv is None else list(argv)
    meta = {"command": " ".join(["python benchmarks/cost_models.py", *given]), "clip": CLIP, "models": models, "seeds": seeds, "methods": list(METHODS),
            "avg_bits": list(AVG_BITS), "seconds": time.perf_counter() - start, "torch_threads": 1}
    rows = [r for runs in all_runs.values() for run in runs.values() for r in run["rows"]]
    builds = {f"{m}/{s}": run["build_seconds"] for m, runs in all_runs.items() for s, run in runs.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, **summary, "plans": rows,
                                                            "build_seconds": builds}, indent=1, sort_keys=True))
    atomic_write_text(out.with_suffix(".md"), markdown(summary, meta))
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

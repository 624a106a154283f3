"""Per-layer Hessian traces: output-space probes (cetopt.curvature.output_traces) vs shared and restricted
weight-space probes (cetopt.curvature.hutchinson_traces), at equal standard error, on piecewise-linear models.

Restricted probes (one per layer, all layers in one backward) have the per-layer variance of a PyHessian-style
per-layer loop at about the loop's cost (benchmarks/curvature.py measured restricted at 0.89-1.06x the loop's
speed), so 'vs restricted' stands for 'vs the per-layer loop'. Models: zoo names (their calibration batches) or
the benchmark models of benchmarks/curvature_models.py (resnet18, transformer: one batch).

Each estimator runs as many probes as fit in ``--budget`` seconds (a 2-probe pilot sets the count; at least
``--probes``, at most 4096), same seed, one after the other in one process, timed. Relative errors are taken
against a common per-layer trace, the precision-weighted mean of all the estimators (each estimator's own mean
would let its noise set its own target); layers whose common trace is within 2 of its standard errors of 0 are
left out (no finite number of probes reaches a relative error there; the count judged is reported). From each
layer's per-probe standard deviation s_l, the probes a run needs before *every* judged layer's relative standard
error is below ``--rtol`` are P = max_l (s_l / (rtol |t_l|))^2 (at least 16, the extraction's minimum); the time
at equal error is P x the measured time per probe. The output-space and shared traces are compared too (their
difference in units of its standard error).

    python benchmarks/trace_output_space.py --models mobilenetv2,digits-cnn,mnist1d-resnet,digits-mlp,resnet18,transformer \
        --out benchmarks/results/trace-output-space     # restricted probes: not on mobilenetv2 (--no-restricted)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cetopt._atomic import atomic_write_text
from cetopt.curvature import CurvatureOperator, hutchinson_traces, keep_freed_memory
from cetopt.curvature.layers import find_layers
from cetopt.curvature.output_traces import exactness_problem, output_space_traces
from cetopt.curvature.threads import configure_threads
from cetopt.modelspec import load_model_spec
from cetopt.zoo.registry import is_zoo_name

MIN_PROBES = 16


def reference_traces(runs: list[list]) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Per layer, the precision-weighted mean of every estimator's trace and its standard error: the common
    scale the relative errors are taken against (each estimator's own mean would let its noise set its target)."""
    traces = np.array([[e.trace for e in run] for run in runs])
    weights = 1.0 / np.maximum(np.array([[e.stderr for e in run] for run in runs]), 1e-300) ** 2
    return (weights * traces).sum(axis=0) / weights.sum(axis=0), 1.0 / np.sqrt(weights.sum(axis=0))


def probes_needed(estimates: list, reference: np.ndarray, judged: np.ndarray, rtol: float) -> tuple[int, int]:  # type: ignore[type-arg]
    """(probes for every judged layer's standard error to fall below rtol x |reference trace|, that layer)."""
    worst, index = MIN_PROBES, -1
    for i, e in enumerate(estimates):
        if not judged[i]:
            continue
        need = math.ceil((e.stderr * math.sqrt(e.n_probes) / (rtol * abs(reference[i]))) ** 2)
        if need > worst:
            worst, index = need, i
    return worst, index


def timed(estimate: Callable[[int], list], budget: float, least: int, most: int) -> tuple[list, float]:  # type: ignore[type-arg]
    """Run ``estimate(probes)`` with as many probes as fit in ``budget`` seconds (from a 2-probe pilot), within
    [least, most]; returns the estimates and seconds per probe of the timed run."""
    start = time.perf_counter()
    estimate(2)
    pilot = (time.perf_counter() - start) / 2
    probes = int(min(most, max(least, budget / max(pilot, 1e-9))))
    start = time.perf_counter()
    estimates = estimate(probes)
    return estimates, (time.perf_counter() - start) / probes


def run(model_name: str, probes: int, budget: float, rtol: float, with_restricted: bool = True) -> dict:  # type: ignore[type-arg]
    if is_zoo_name(model_name):
        spec = load_model_spec(model_name)
        model = spec.model.eval()
        layers = [r.name for r in find_layers(model, spec.quantisable_layers(), exclude=spec.exclude)]
        op = CurvatureOperator(model, spec.loss_fn, list(spec.calibration), layers=layers, device="cpu")
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from curvature_models import load_bench_model

        bench = load_bench_model(model_name)
        op = CurvatureOperator(bench.model.eval(), bench.loss_fn, [bench.batch], device="cpu")
    problem = exactness_problem(op)
    if problem is not None:
        return {"model": model_name, "skipped": problem}
    estimators: dict[str, Callable[[int], list]] = {  # type: ignore[type-arg]
        "output": lambda n: output_space_traces(op, max_probes=n, min_probes=n, rtol=rtol, show_progress=False),
        "shared": lambda n: hutchinson_traces(op, max_probes=n, min_probes=n, rtol=rtol, show_progress=False)}
    if with_restricted:
        estimators["restricted"] = lambda n: hutchinson_traces(op, max_probes=n, min_probes=n, rtol=rtol,
                                                               show_progress=False, mode="restricted")
    runs = {label: timed(fn, budget, probes, 4096) for label, fn in estimators.items()}
    reference, reference_se = reference_traces([est for est, _ in runs.values()])
    judged = np.abs(reference) > 2 * reference_se
    result: dict = {"model": model_name, "layers": len(op.names), "rtol": rtol,  # type: ignore[type-arg]
                    "batches": len(op.batches), "judged_layers": int(judged.sum())}
    for label in ("output", "shared", "restricted"):
        if label not in runs:
            result[label] = None
            continue
        estimates, per_probe = runs[label]
        need, worst = probes_needed(estimates, reference, judged, rtol)
        result[label] = {"probes_run": estimates[0].n_probes, "per_probe_s": per_probe, "probes_at_rtol": need,
                         "worst_layer": op.names[worst] if worst >= 0 else None, "seconds_at_rtol": need * per_probe,
                         "median_rel_stderr": float(np.median([e.stderr / abs(t) for e, t, j
                                                               in zip(estimates, reference, judged) if j]))}
    output, shared = runs["output"][0], runs["shared"][0]
    z = [abs(a.trace - b.trace) / math.hypot(a.stderr, b.stderr) for a, b in zip(output, shared)]
    result["traces_differ_in_se"] = {"median": float(np.median(z)), "max": float(max(z)),
                                     "share_within_3": float(np.mean([v < 3 for v in z]))}
    result["speedup_at_equal_error"] = result["shared"]["seconds_at_rtol"] / result["output"]["seconds_at_rtol"]
    result["speedup_vs_restricted"] = None if result["restricted"] is None else \
        result["restricted"]["seconds_at_rtol"] / result["output"]["seconds_at_rtol"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv2,digits-cnn")
    parser.add_argument("--probes", type=int, default=24, help="fewest probes per estimator")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per estimator and model: small models run more probes (up to 4096)")
    parser.add_argument("--rtol", type=float, default=0.05)
    parser.add_argument("--no-restricted", default="mobilenetv2",
                        help="models without the restricted estimator (comma-separated): on MobileNetV2 each "
                             "restricted probe is a product per layer, about an hour for 24 probes on 2 cores")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    keep_freed_memory()
    configure_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        rows.append(run(name, args.probes, args.budget, args.rtol, name not in args.no_restricted.split(",")))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({"threads": args.threads, "torch": torch.__version__,
                                                                 "rows": rows}, indent=1) + "\n")
    lines = ["# Per-layer traces: output-space probes vs shared and restricted weight-space probes", "",
             f"Generated by `python benchmarks/trace_output_space.py --models {args.models} --probes {args.probes} "
             f"--budget {args.budget} --rtol {args.rtol} --no-restricted {args.no_restricted} --threads {args.threads} --out "
             f"{args.out}` (torch {torch.__version__}). Probes at equal error: the probes every judged layer needs for a "
             f"relative standard error below {args.rtol} of the common trace (at least {MIN_PROBES}), from the per-probe "
             "spread of the probes run; time = probes x measured time per probe (method in the script's docstring). "
             "'differ (SE)': |trace_output - trace_shared| / the standard error of the difference, per layer.",
             " Restricted probes stand for the per-layer loop (see the script's docstring).",
             "", "| model | layers (judged) | probes run output / shared / restricted | s/probe output / shared / restricted | probes at error output / shared / restricted | "
             "time output / shared / restricted s | speedup vs shared | speedup vs restricted | median rel SE output / "
             "shared / restricted | differ from shared (SE) median, max, share < 3 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        o, s, d = r["output"], r["shared"], r["traces_differ_in_se"]
        q = r["restricted"] or {"per_probe_s": float("nan"), "probes_at_rtol": "-", "seconds_at_rtol": float("nan"),
                                "median_rel_stderr": float("nan"), "probes_run": "-"}
        versus = "-" if r["speedup_vs_restricted"] is None else f"**{r['speedup_vs_restricted']:.1f}x**"
        lines.append(f"| {r['model']} | {r['layers']} ({r['judged_layers']}) | {o['probes_run']} / {s['probes_run']} / "
                     f"{q['probes_run']} | {o['per_probe_s']:.3g} / {s['per_probe_s']:.3g} / "
                     f"{q['per_probe_s']:.3g} | {o['probes_at_rtol']} / {s['probes_at_rtol']} / {q['probes_at_rtol']} | "
                     f"{o['seconds_at_rtol']:.3g} / {s['seconds_at_rtol']:.3g} / {q['seconds_at_rtol']:.3g} | "
                     f"**{r['speedup_at_equal_error']:.1f}x** | {versus} | "
                     f"{o['median_rel_stderr']:.1%} / {s['median_rel_stderr']:.1%} / {q['median_rel_stderr']:.1%} | "
                     f"{d['median']:.2f}, {d['max']:.2f}, {d['share_within_3']:.0%} |")
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

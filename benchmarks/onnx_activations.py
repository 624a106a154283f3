"""8-bit static activation quantisation vs weights only, at the same weight plan, in onnxruntime: solve a shipped
problem with dp, apply, export weights-only and with 8-bit per-tensor activations (min-max and percentile
observers, calibrated on the spec's calibration batches), and compare on the spec's test data: the headline
metric per test example (spec.test_outcomes: MobileNetV2's top-1 agreement with FP32 per crop) with paired
bootstrap 95% CIs of activations minus weights-only, plus latency ratios (interleaved rounds).

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/onnx_activations.py --model mobilenetv2 \\
        --problem problems/mobilenetv2/mobilenetv2-cet-upper-avg4.json --test-size 384 \\
        --out benchmarks/results/onnx-activations-mobilenetv2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_export import latency, ratio_ci, solved_plan  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.export.call import capture_call
    from cetopt.export.onnx_eval import OnnxModule, onnx_session
    from cetopt.export.onnx_export import export_onnx
    from cetopt.modelspec import load_model_spec
    from cetopt.stats import paired_bootstrap_ci

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--problem", required=True)
    parser.add_argument("--solver", default="dp")
    parser.add_argument("--test-size", type=int, default=384, help="test examples (zoo option test_size; 0: the spec's default)")
    parser.add_argument("--rounds", type=int, default=20, help="latency rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stale-calibration", action="store_true",
                        help="use a problem whose calibration fingerprint differs from the spec's (same weights): the "
                             "plan stays a valid plan of these weights; the results file says so")
    parser.add_argument("--out", required=True, help="path prefix: writes PREFIX.json and PREFIX.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = load_model_spec(args.model, **({"test_size": args.test_size} if args.test_size else {}))
    if spec.test_outcomes is None:
        raise SystemExit(f"{args.model} has no per-example test outcomes to compare")
    plan, result, stale = solved_plan(args, spec)
    variants = {"weights only": {}, "8-bit activations, min-max": {"activation_bits": 8, "observer": "minmax"},
                "8-bit activations, percentile": {"activation_bits": 8, "observer": "percentile"}}
    outcomes, metrics, runs, quantised = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        write_artifact(spec, plan, Path(tmp) / "art", target=args.model, require_fingerprint=not stale)
        loaded = load_compressed(Path(tmp) / "art", spec)
        call = capture_call(loaded.model, spec.loss_fn, spec.calibration[0])
        feed = call.feed(call.args, call.kwargs)
        for i, (name, options) in enumerate(variants.items()):
            info = export_onnx(Path(tmp) / "art", spec, Path(tmp) / f"{i}.onnx", **options)
            quantised[name] = len(info.activations)
            session = onnx_session(Path(tmp) / f"{i}.onnx", args.threads)
            runner = OnnxModule(session, call)
            outcomes[name] = [float(v) for v in spec.test_outcomes(runner)]
            metrics[name] = spec.metrics(runner)
            runs[name] = lambda s=session: s.run(None, feed)
        outcomes["torch artefact (weights only)"] = [float(v) for v in spec.test_outcomes(loaded.model)]
        times = latency(runs, args.rounds)
    base = "weights only"
    comparisons = {}
    for name in variants:
        if name != base:
            ci = paired_bootstrap_ci(outcomes[name], outcomes[base])
            comparisons[name] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "verdict": ci.verdict,
                                 "n": ci.n, "n_boot": ci.n_boot}
    out = {"model": spec.name, "problem": args.problem, "solver": args.solver, "avg_bits": result.avg_bits,
           "calibration_fingerprint_checked": not stale,
           "test_examples": len(outcomes[base]), "data": spec.data, "activation_inputs": quantised,
           "metrics": metrics, "mean_outcome": {k: sum(v) / len(v) for k, v in outcomes.items()},
           "vs_weights_only": comparisons,
           "latency": {"batch": {k: list(v.shape) for k, v in feed.items()}, "rounds": args.rounds,
                       "threads": args.threads,
                       "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                       "over_weights_only": {k: ratio_ci(times[k], times[base]) for k in variants if k != base}},
           "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__}}
    prefix = Path(args.out)
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(out, indent=1, allow_nan=False) + "\n")
    atomic_write_text(prefix.with_suffix(".md"), render(out))
    print(render(out))
    return 0


STALE = ("The problem file's calibration fingerprint differs from today's zoo spec (its weights fingerprint matches), "
         "so its plan is used as a plan of these weights, not as the optimum for today's calibration batches.")


def render(r: dict[str, Any]) -> str:
    """The results file's markdown (generated from the JSON)."""
    from cetopt.tables import ci_cell

    lat = r["latency"]
    lines = [f"# 8-bit activations vs weights only in onnxruntime: {r['model']}", "",
             f"Weight plan: {r['solver']} on `{r['problem']}` ({r['avg_bits']:.2f} average bits), the same in every "
             f"row; {r['test_examples']} test examples ({r['data']}). Written by `benchmarks/onnx_activations.py` "
             f"(one run; onnxruntime {r['versions']['onnxruntime']}, {lat['threads']} threads).", "",
             "| model | activation inputs quantised | mean test outcome | vs weights only (points, paired bootstrap "
             "95% CI) | latency / weights only |", "| --- | ---: | ---: | --- | --- |"]
    for name, mean in r["mean_outcome"].items():
        ratio = lat["over_weights_only"].get(name)
        lines.append(f"| {name} | {r['activation_inputs'].get(name, '-')} | {mean:.4f} | "
                     f"{ci_cell(r['vs_weights_only'].get(name))} | "
                     + (f"{ratio['median']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]" if ratio else "-") + " |")
    if not r["calibration_fingerprint_checked"]:
        lines += ["", STALE]
    lines += ["", "Verdict a: activations better; b: weights only better; tie: the CI contains 0. Latency: median of "
              f"per-round ratios over {lat['rounds']} interleaved rounds on one calibration batch {lat['batch']}, "
              "bootstrap 95% CI; the Q/DQ pairs run in float (no output quantisation, so onnxruntime does not fuse "
              "them into integer kernels).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

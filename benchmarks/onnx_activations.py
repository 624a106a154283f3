"""8-bit static activation quantisation vs weights only, at the same weight plan: solve a shipped problem with dp,
apply, export weights-only and with 8-bit per-tensor activations (min-max and percentile observers, calibrated on
the spec's calibration batches in onnxruntime by ``cetopt export --activation-bits``), and the same plan applied
with ``cetopt apply --activation-bits 8`` (grids calibrated in torch and recorded in the artefact), run both as
the torch artefact (inputs fake-quantised, what ``cetopt evaluate DIR`` measures) and as its ONNX export (the
recorded grids reused). Compared on the spec's test data: the headline metric per test example
(spec.test_outcomes: MobileNetV2's top-1 agreement with FP32 per crop) with paired bootstrap 95% CIs of each
variant minus weights-only, by cluster when the spec has ``test_clusters`` (MobileNetV2: by photo;
``spec.paired_ci``), plus latency ratios (interleaved rounds).

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/onnx_activations.py --model mobilenetv2 \\
        --problem problems/mobilenetv2/mobilenetv2-cet-upper-avg4.json --stale-calibration --test-size 384 \\
        --out benchmarks/results/onnx-activations-mobilenetv2
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_export import latency, ratio_ci, solved_plan  # noqa: E402


def step(what: str) -> None:
    """A progress line with the process's peak memory (a 224x224 model's runs are long and large)."""
    import resource

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"[{time.strftime('%H:%M:%S')}] {what} (peak RSS so far {peak_gb:.1f} GB)", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.export.call import capture_call
    from cetopt.export.onnx_eval import OnnxModule, onnx_session
    from cetopt.export.onnx_export import export_onnx
    from cetopt.modelspec import load_model_spec
    from cetopt.quant.activations import fake_quantised_inputs

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
    outcomes, runs, quantised = {}, {}, {}
    applied = "8-bit activations, apply (min-max)"
    with tempfile.TemporaryDirectory() as tmp:
        write_artifact(spec, plan, Path(tmp) / "art", target=args.model, require_fingerprint=not stale)
        loaded = load_compressed(Path(tmp) / "art", spec)
        call = capture_call(loaded.model, spec.loss_fn, spec.calibration[0])
        feed = call.feed(call.args, call.kwargs)
        # first, the same plan applied with --activation-bits 8: grids calibrated in torch, recorded, reused by the
        # export; its session is dropped before the latency sessions open (onnxruntime's arenas hold GBs at 224x224)
        write_artifact(spec, plan, Path(tmp) / "a8", target=args.model, require_fingerprint=not stale,
                       activation_bits=8, observer="minmax")
        step("applied with --activation-bits 8")
        a8 = load_compressed(Path(tmp) / "a8", spec)
        step("loaded")
        info = export_onnx(Path(tmp) / "a8", spec, Path(tmp) / "a8.onnx")
        if info.activation_source != "artifact":
            raise SystemExit(f"the export recalibrated instead of reusing the recorded grids ({info.activation_source})")
        step("exported")
        runner = OnnxModule(onnx_session(Path(tmp) / "a8.onnx", args.threads), call)
        name = f"{applied}, ONNX"
        outcomes[name], quantised[name] = [float(v) for v in spec.test_outcomes(runner)], len(info.activations)
        del runner
        gc.collect()
        step("ONNX outcomes")
        with fake_quantised_inputs(a8.model, a8.activations):  # test_outcomes runs in chunks (spec.metrics would not)
            name = f"{applied}, torch artefact"
            outcomes[name], quantised[name] = [float(v) for v in spec.test_outcomes(a8.model)], len(a8.activations)
        step("torch artefact outcomes")
        for i, (name, options) in enumerate(variants.items()):
            info = export_onnx(Path(tmp) / "art", spec, Path(tmp) / f"{i}.onnx", **options)
            quantised[name] = len(info.activations)
            # test_outcomes runs in chunks; spec.metrics would run every test crop in one batch, and onnxruntime's
            # arena keeps that batch's memory: an evaluation session is dropped, latency gets fresh ones below
            runner = OnnxModule(onnx_session(Path(tmp) / f"{i}.onnx", args.threads), call)
            outcomes[name] = [float(v) for v in spec.test_outcomes(runner)]
            del runner
            gc.collect()
            step(name)
        outcomes["torch artefact (weights only)"] = [float(v) for v in spec.test_outcomes(loaded.model)]
        step("torch artefact (weights only)")
        for i, name in enumerate(variants):
            runs[name] = lambda s=onnx_session(Path(tmp) / f"{i}.onnx", args.threads): s.run(None, feed)
        times = latency(runs, args.rounds)
    base = "weights only"
    comparisons = {}
    for name in outcomes:
        if name != base:
            ci = spec.paired_ci(outcomes[name], outcomes[base])
            comparisons[name] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "verdict": ci.verdict,
                                 "n": ci.n, "n_boot": ci.n_boot, "statistic": ci.statistic}
    order = [*variants, "torch artefact (weights only)", f"{applied}, torch artefact", f"{applied}, ONNX"]
    same = [a == b for a, b in zip(outcomes[f"{applied}, ONNX"], outcomes[f"{applied}, torch artefact"])]
    out = {"model": spec.name, "problem": args.problem, "solver": args.solver, "avg_bits": result.avg_bits,
           "calibration_fingerprint_checked": not stale,
           "test_examples": len(outcomes[base]), "data": spec.data, "activation_inputs": quantised,
           "clusters": len(set(spec.test_clusters)) if spec.test_clusters is not None else None,
           "applied_onnx_equals_torch": sum(same) / len(same),
           "mean_outcome": {k: sum(outcomes[k]) / len(outcomes[k]) for k in order},
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
             f"95% CI{' by photo' if r.get('clusters') else ''}) | latency / weights only |",
             "| --- | ---: | ---: | --- | --- |"]
    for name, mean in r["mean_outcome"].items():
        ratio = lat["over_weights_only"].get(name)
        lines.append(f"| {name} | {r['activation_inputs'].get(name, '-')} | {mean:.4f} | "
                     f"{ci_cell(r['vs_weights_only'].get(name))} | "
                     + (f"{ratio['median']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]" if ratio else "-") + " |")
    if not r["calibration_fingerprint_checked"]:
        lines += ["", STALE]
    if "applied_onnx_equals_torch" in r:
        lines += ["", "Rows 'apply': the plan applied with `cetopt apply --activation-bits 8` (min-max grids calibrated "
                  "in torch on the unpacked weights and recorded in the artefact), measured as the torch artefact with "
                  "its inputs fake-quantised (`cetopt evaluate DIR`) and as its ONNX export, which reuses the recorded "
                  f"grids: their per-example outcomes are equal on {r['applied_onnx_equals_torch']:.2%} of the test "
                  "examples (the two differ where a value lies within the runtimes' last-bit differences of a grid "
                  "step boundary and rounds to the neighbouring step; docs/artifact-format.md)."]
    where = f"a cluster bootstrap over {r['clusters']} photos (spec.paired_ci)" if r.get("clusters") else \
        "an example-level paired bootstrap"
    lines += ["", f"CIs: {where}. Verdict a: the row better; b: weights only better; tie: the CI contains 0. "
              "Latency: median of "
              f"per-round ratios over {lat['rounds']} interleaved rounds on one calibration batch {lat['batch']}, "
              "bootstrap 95% CI; the Q/DQ pairs run in float (no output quantisation, so onnxruntime does not fuse "
              "them into integer kernels).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""ONNX export measured on a zoo model: solve a shipped problem with dp, apply the plan (cetopt.artifact), export
it (cetopt.export), and compare in onnxruntime: the file's size against the packed size; the spec's metric
and the outputs on its test data against the unpacked torch artefact (max relative error, top-1 equality);
latency of the quantised ONNX model against the FP32 ONNX model of the same exporter, in the same process,
rounds interleaved (median per-round ratio with a bootstrap 95% CI over rounds).

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/onnx_export.py --model mobilenetv2 \\
        --problem problems/mobilenetv2/mobilenetv2-cet-upper-avg4.json --out benchmarks/results/onnx-export-mobilenetv2
    ... --model minilm --problem problems/minilm/minilm-cet-upper-avg4.json --embedding-bits 8 \\
        --out benchmarks/results/onnx-export-minilm

``--embedding-bits B`` adds the model's nn.Embedding tables to the plan at B bits (the problems leave them
out), so the export carries Gather consumers of DequantizeLinear too; the plan then loses its layer-set
fingerprint (its weights fingerprint stays checked).

``--exact-bits 2,4,8`` (repeatable) compares instead the default plan with plans whose widths ONNX stores
without padding (INT2/INT4/INT8): the same problem with each layer's choices restricted to those bit-widths
(what ``cetopt plan --bits 2,4,8`` offers the solver), solved at the same budget. Per plan: bit-widths,
packed size vs ONNX file (container padding per bit-width), and top-1 agreement with FP32 of the ONNX file
in onnxruntime on the spec's test crops, each container-exact plan minus the default plan with a paired
bootstrap 95% CI by photo (``spec.paired_ci``). No latency in this mode::

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/onnx_export.py --model mobilenetv2 \\
        --problem problems/mobilenetv2/mobilenetv2-cet-upper-avg4.json --stale-calibration --test-size 384 \\
        --exact-bits 2,4,8 --exact-bits 4,8 --out benchmarks/results/onnx-exact-bits-mobilenetv2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def latency(runs: dict[str, Any], rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each ``runs`` entry (a no-argument callable), rounds interleaved."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_ci(num: list[float], den: list[float]) -> dict[str, float]:
    """Median of the per-round ratios num/den with a bootstrap 95% CI (scipy.stats.bootstrap, percentile)."""
    from scipy.stats import bootstrap

    ratios = np.asarray(num) / np.asarray(den)
    ci = bootstrap((ratios,), np.median, confidence_level=0.95, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return {"median": float(np.median(ratios)), "low": float(ci.low), "high": float(ci.high)}


def restricted(problem: Any, bits: Sequence[int]) -> Any:
    """``problem`` with each layer's choices cut to those at ``bits`` (what extracting with ``--bits`` offers the
    solver: a choice's predicted loss does not depend on the other choices); interaction terms index choices,
    so a problem with them is refused."""
    from dataclasses import replace

    if problem.interactions:
        raise SystemExit("--exact-bits needs a problem without interaction terms")
    layers = []
    for layer in problem.layers:
        kept = tuple(c for c in layer.choices if c.bits in bits)
        if not kept:
            raise SystemExit(f"layer {layer.name} has no choice at {sorted(bits)} bits")
        layers.append(replace(layer, choices=kept))
    return problem.with_changes(layers=tuple(layers), name=f"{problem.name}-bits{'-'.join(map(str, sorted(bits)))}")


def solved_plan(args: argparse.Namespace, spec: Any, bits: Sequence[int] | None = None) -> tuple[Any, Any, bool]:
    """(``args.problem`` solved by ``args.solver`` as a plan of ``spec``, the solve result, whether the plan's
    calibration fingerprint is stale). A stale one is refused unless ``--stale-calibration``; then its calibration fingerprint is dropped (the
    weights fingerprint stays: write_artifact still checks it) and the caller applies it unverified. ``bits``:
    solve the problem with its choices restricted to these bit-widths (:func:`restricted`)."""
    from cetopt.fingerprint import fingerprint_spec
    from cetopt.problem.io import load_problem
    from cetopt.quant.plan import Plan, plan_from_result
    from cetopt.solvers.api import solve

    problem = load_problem(args.problem)
    if bits:
        problem = restricted(problem, bits)
    result = solve(problem, args.solver)
    plan = plan_from_result(problem, result, model=args.model)
    now = fingerprint_spec(spec, list(plan.layers)).as_metadata()["fingerprint_calibration"]
    stale = plan.extra.get("fingerprint_calibration", now) != now
    if stale and not args.stale_calibration:
        raise SystemExit(f"{args.problem} was built on other calibration batches than {args.model}'s today; pass "
                         "--stale-calibration to use its plan anyway")
    if stale:
        plan = Plan(layers=plan.layers, quantizer=plan.quantizer, model=plan.model, problem=plan.problem,
                    extra={k: v for k, v in plan.extra.items() if k != "fingerprint_calibration"})
    return plan, result, stale


def main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.export.call import capture_call
    from cetopt.export.onnx_eval import evaluate_onnx, onnx_session
    from cetopt.export.onnx_export import export_onnx, torch_to_onnx
    from cetopt.modelspec import load_model_spec
    from cetopt.quant.plan import LayerChoice, Plan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--problem", required=True)
    parser.add_argument("--solver", default="dp")
    parser.add_argument("--embedding-bits", type=int, default=0, help="also quantise nn.Embedding tables (0: no)")
    parser.add_argument("--uniform-bits", type=int, default=4, help="also export every planned layer at this many "
                        "bits (a width ONNX stores without padding), sizes only (0: no)")
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stale-calibration", action="store_true",
                        help="use a problem whose calibration fingerprint differs from the spec's (same weights): the "
                             "plan stays a valid plan of these weights; the results file says so")
    parser.add_argument("--exact-bits", action="append", default=[], metavar="B,B,...",
                        help="compare the default plan with the problem solved on these bit-widths only (repeatable)")
    parser.add_argument("--test-size", type=int, default=0, help="test examples (zoo option test_size; 0: the spec's "
                                                                 "default)")
    parser.add_argument("--out", required=True, help="path prefix: writes PREFIX.json and PREFIX.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = load_model_spec(args.model, **({"test_size": args.test_size} if args.test_size else {}))
    if args.exact_bits:
        return exact_bits(args, spec)
    plan, result, stale = solved_plan(args, spec)
    if args.embedding_bits:
        tables = {n: LayerChoice(bits=args.embedding_bits) for n, m in spec.model.named_modules()
                  if isinstance(m, torch.nn.Embedding)}
        extra = {k: v for k, v in plan.extra.items() if k != "fingerprint_layers"}
        plan = Plan(layers={**plan.layers, **tables}, quantizer=plan.quantizer, model=plan.model,
                    problem=plan.problem, extra=extra)
    with tempfile.TemporaryDirectory() as tmp:
        art, path, fp_path = Path(tmp) / "art", Path(tmp) / "model.onnx", Path(tmp) / "fp32.onnx"
        start = time.perf_counter()
        # unverified only where this script dropped a fingerprint itself (stale calibration, embedding tables added)
        info = write_artifact(spec, plan, art, target=args.model,
                              require_fingerprint=not (stale or args.embedding_bits))
        apply_s = time.perf_counter() - start
        start = time.perf_counter()
        exported = export_onnx(art, spec, path)
        export_s = time.perf_counter() - start
        report = evaluate_onnx(path, spec, threads=args.threads)
        loaded = load_compressed(art, spec)
        call = capture_call(spec.model, spec.loss_fn, spec.calibration[0])
        fp_path.write_bytes(torch_to_onnx(spec.model, call).SerializeToString())
        fp32_bytes = fp_path.stat().st_size
        feed = call.feed(call.args, call.kwargs)
        sessions = {"fp32_onnx": onnx_session(fp_path, args.threads),
                    "quantised_onnx": onnx_session(path, args.threads),
                    "quantised_onnx_folded": onnx_session(path, args.threads, fold_weights=True),
                    "quantised_onnx_int8_matmul": onnx_session(path, args.threads, int8_matmul=True)}
        runs = {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}

        def torch_run() -> None:
            with torch.no_grad():
                loaded.model(*call.args, **call.kwargs)

        runs["torch_artifact"] = torch_run
        times = latency(runs, args.rounds)
        int8 = evaluate_onnx(path, spec, threads=args.threads, int8_matmul=True)
        uniform = None
        if args.uniform_bits:
            flat = Plan(layers={n: LayerChoice(bits=args.uniform_bits) for n in plan.layers}, quantizer=plan.quantizer,
                        model=plan.model, problem=plan.problem,
                        extra={k: v for k, v in plan.extra.items() if not k.startswith("fingerprint_")
                               or k == "fingerprint_weights"})
            # a hand-made size probe of the same weights: only the weights fingerprint ties it to them
            flat_info = write_artifact(spec, flat, Path(tmp) / "uniform", target=args.model, require_fingerprint=False)
            flat_export = export_onnx(Path(tmp) / "uniform", spec, Path(tmp) / "uniform.onnx")
            uniform = {"bits": args.uniform_bits, "onnx_file_bytes": flat_export.file_bytes,
                       "onnx_overhead_bytes": flat_export.overhead_bytes, "packed_bytes": flat_info.predicted_bytes,
                       "onnx_code_bytes": flat_export.code_bytes, "packed_code_bytes": flat_info.code_bytes,
                       "onnx_over_packed": flat_export.file_bytes / flat_info.predicted_bytes}
    kinds: dict[str, int] = {}
    for storage in exported.storage.values():
        kinds[storage] = kinds.get(storage, 0) + 1
    bits: dict[int, int] = {}
    for choice in plan.layers.values():
        bits[choice.bits] = bits.get(choice.bits, 0) + 1
    batch = {k: list(v.shape) for k, v in feed.items()}
    out = {
        "model": spec.name, "problem": args.problem, "solver": args.solver, "avg_bits": result.avg_bits,
        "calibration_fingerprint_checked": not stale,
        "plan_bits": {str(k): v for k, v in sorted(bits.items())}, "layers": len(plan.layers),
        "embedding_bits": args.embedding_bits, "storage": kinds,
        "sizes": {"onnx_file_bytes": exported.file_bytes, "onnx_code_bytes": exported.code_bytes,
                  "onnx_scale_bytes": exported.scale_bytes, "onnx_other_bytes": exported.other_bytes,
                  "onnx_overhead_bytes": exported.overhead_bytes, "packed_bytes": info.predicted_bytes,
                  "safetensors_file_bytes": info.file_bytes, "fp32_onnx_bytes": fp32_bytes,
                  "onnx_over_packed": exported.file_bytes / info.predicted_bytes},
        "uniform": uniform,
        "weights_exact": sum(e == 0.0 for e in exported.weight_error.values()),
        "weight_error_max": max(exported.weight_error.values()),
        "metrics": {"onnx": report.metrics, "torch_artifact": report.artifact_metrics, "fp32": report.fp_metrics,
                    "onnx_int8_matmul": int8.metrics},
        "max_relative_error": report.max_relative_error, "argmax_agreement": report.argmax_agreement,
        "int8_matmul_max_relative_error": int8.max_relative_error,
        "int8_matmul_argmax_agreement": int8.argmax_agreement, "compared_calls": report.compared_calls,
        "latency": {"batch": batch, "rounds": args.rounds, "threads": args.threads,
                    "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                    "quantised_over_fp32": ratio_ci(times["quantised_onnx"], times["fp32_onnx"]),
                    "folded_over_fp32": ratio_ci(times["quantised_onnx_folded"], times["fp32_onnx"]),
                    "int8_matmul_over_fp32": ratio_ci(times["quantised_onnx_int8_matmul"], times["fp32_onnx"])},
        "seconds": {"apply": apply_s, "export": export_s},
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                     "python": platform.python_version(), "machine": platform.machine()},
    }
    prefix = Path(args.out)
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(out, indent=1, allow_nan=False) + "\n")
    atomic_write_text(prefix.with_suffix(".md"), render(out))
    print(render(out))
    return 0


def exact_bits(args: argparse.Namespace, spec: Any) -> int:
    """The ``--exact-bits`` comparison (module docstring): writes PREFIX.json and PREFIX.md."""
    import onnxruntime
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.export.call import capture_call
    from cetopt.export.onnx_eval import OnnxModule, onnx_session
    from cetopt.export.onnx_export import export_onnx

    if spec.test_outcomes is None:
        raise SystemExit(f"{args.model} has no per-example test outcomes to compare")
    variants: dict[str, tuple[int, ...] | None] = {"default": None}
    for text in args.exact_bits:
        widths = tuple(sorted({int(b) for b in text.split(",")}))
        variants["bits " + ",".join(map(str, widths))] = widths
    rows, outcomes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, widths) in enumerate(variants.items()):
            plan, result, stale = solved_plan(args, spec, widths)
            art, path = Path(tmp) / f"art{i}", Path(tmp) / f"m{i}.onnx"
            info = write_artifact(spec, plan, art, target=args.model, require_fingerprint=not stale)
            exported = export_onnx(art, spec, path)
            call = capture_call(load_compressed(art, spec, verify=False).model, spec.loss_fn, spec.calibration[0])
            runner = OnnxModule(onnx_session(path, args.threads), call)
            outcomes[label] = [float(v) for v in spec.test_outcomes(runner)]
            counts: dict[int, int] = {}
            for choice in plan.layers.values():
                counts[choice.bits] = counts.get(choice.bits, 0) + 1
            rows[label] = {
                "bits": None if widths is None else list(widths), "avg_bits": result.avg_bits,
                "predicted_loss": result.loss, "stale_calibration": stale,
                "layers_per_bits": {str(k): v for k, v in sorted(counts.items())},
                "packed_bytes": info.predicted_bytes, "packed_code_bytes": info.code_bytes,
                "onnx_file_bytes": exported.file_bytes, "onnx_code_bytes": exported.code_bytes,
                "onnx_overhead_bytes": exported.overhead_bytes,
                "onnx_over_packed": exported.file_bytes / info.predicted_bytes,
                "padding_bytes": exported.padding_bytes,
                "padding": {str(b): {"container": p.container, "values": p.values, "packed_bytes": p.packed_bytes,
                                     "onnx_bytes": p.onnx_bytes} for b, p in exported.padding.items()},
                "mean_agreement": sum(outcomes[label]) / len(outcomes[label])}
    comparisons = {}
    for label in variants:
        if label != "default":
            ci = spec.paired_ci(outcomes[label], outcomes["default"])
            comparisons[label] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "verdict": ci.verdict,
                                  "n": ci.n, "n_boot": ci.n_boot,
                                  "clusters": len(set(spec.test_clusters)) if spec.test_clusters is not None else None}
    out = {"model": spec.name, "problem": args.problem, "solver": args.solver, "data": spec.data,
           "test_examples": len(outcomes["default"]), "plans": rows, "vs_default": comparisons,
           "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__}}
    prefix = Path(args.out)
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(out, indent=1, allow_nan=False) + "\n")
    atomic_write_text(prefix.with_suffix(".md"), render_exact(out))
    print(render_exact(out))
    return 0


def render_exact(r: dict[str, Any]) -> str:
    """The ``--exact-bits`` results file's markdown (generated from the JSON)."""
    from cetopt.tables import ci_cell

    stale = any(p["stale_calibration"] for p in r["plans"].values())
    comp = next(iter(r["vs_default"].values()), None)
    by = "by photo" if comp and comp["clusters"] else "over examples"
    lines = [f"# Container-exact bit-widths in ONNX: {r['model']}", "",
             f"Plans: {r['solver']} on `{r['problem']}` as shipped (default) and with each layer's choices restricted "
             "to widths ONNX stores without padding (INT2/INT4/INT8 at opset 25; what `cetopt plan --bits 2,4,8` "
             f"offers the solver), at the same budget; {r['test_examples']} test examples ({r['data']}). Written by "
             f"`benchmarks/onnx_export.py --exact-bits` (one run; onnxruntime {r['versions']['onnxruntime']})."
             + (" " + STALE if stale else ""), "",
             "| plan | layers per bit-width | avg bits | packed bytes | ONNX file bytes | ONNX / packed | container "
             f"padding bytes | top-1 agreement (ONNX) | vs default (points, paired bootstrap 95% CI {by}) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, p in r["plans"].items():
        lines.append(f"| {label} | {p['layers_per_bits']} | {p['avg_bits']:.2f} | {p['packed_bytes']} | "
                     f"{p['onnx_file_bytes']} | {p['onnx_over_packed']:.3f} | {p['padding_bytes']} | "
                     f"{p['mean_agreement']:.4f} | {ci_cell(r['vs_default'].get(label))} |")
    lines += ["", "Container padding per bit-width (codes bit-packed -> in the ONNX file):", ""]
    for label, p in r["plans"].items():
        lines.append(f"- {label}: " + "; ".join(f"{b}-bit {q['packed_bytes']} -> {q['onnx_bytes']} bytes as "
                                                f"{q['container']}" for b, q in p["padding"].items()))
    where = f"a cluster bootstrap over {comp['clusters']} photos" if comp and comp["clusters"] else \
        "an example-level paired bootstrap"
    lines += ["", "The rest of the ONNX file over the packed size is container overhead (graph, names, framing) "
              "and padding of the last byte of each tensor. Verdict a: the container-exact plan agrees more often; "
              f"b: the default plan; tie: the CI contains 0. CI: {where} ({comp['n_boot'] if comp else '-'} "
              "resamples).", ""]
    return "\n".join(lines)


STALE = ("The problem file's calibration fingerprint differs from today's zoo spec (its weights fingerprint matches), "
         "so its plan is used as a plan of these weights, not as the optimum for today's calibration batches.")


def render(r: dict[str, Any]) -> str:
    """The results file's markdown (generated from the JSON)."""
    s, lat = r["sizes"], r["latency"]
    q, f, i8 = lat["quantised_over_fp32"], lat["folded_over_fp32"], lat["int8_matmul_over_fp32"]
    metric = next(iter(r["metrics"]["onnx"]), None)
    lines = [f"# ONNX export: {r['model']}", "",
             f"Plan: {r['solver']} on `{r['problem']}` ({r['avg_bits']:.2f} average bits; layers per bit-width "
             f"{r['plan_bits']}{'; embeddings at %d bits' % r['embedding_bits'] if r['embedding_bits'] else ''}), "
             "written by `benchmarks/onnx_export.py` (one run; onnxruntime "
             f"{r['versions']['onnxruntime']}, torch {r['versions']['torch']}, {lat['threads']} threads)."
             + ("" if r["calibration_fingerprint_checked"] else " " + STALE), "",
             "| size | bytes |", "| --- | ---: |",
             f"| ONNX file | {s['onnx_file_bytes']} |",
             f"| - codes ({', '.join(f'{n} {k}' for k, n in sorted(r['storage'].items()))}) | {s['onnx_code_bytes']} |",
             f"| - scales | {s['onnx_scale_bytes']} |", f"| - other parameters | {s['onnx_other_bytes']} |",
             f"| - container overhead | {s['onnx_overhead_bytes']} |",
             f"| packed size (cetopt.quant.pack) | {s['packed_bytes']} |",
             f"| model.safetensors | {s['safetensors_file_bytes']} |",
             f"| FP32 ONNX file | {s['fp32_onnx_bytes']} |", "",
             f"ONNX file / packed size: {s['onnx_over_packed']:.3f}. {r['weights_exact']} of {r['layers']} planned "
             f"weights dequantise bit-identically to the artefact's (largest relative difference "
             f"{r['weight_error_max']:.1e}).", ""]
    u = r.get("uniform")
    if u:
        lines += [f"The same layers all at {u['bits']} bits (sizes only): ONNX file {u['onnx_file_bytes']} bytes (codes "
                  f"{u['onnx_code_bytes']}, container overhead {u['onnx_overhead_bytes']}) vs packed size "
                  f"{u['packed_bytes']} (codes {u['packed_code_bytes']}): ratio {u['onnx_over_packed']:.3f}. ONNX "
                  "has 2-, 4-, 8- and 16-bit integer types (opset 25; 4, 8 and 16 at opset 21), so a plan's 3-bit "
                  "codes take 4 bits in the file and 5- to 7-bit codes take 8.", ""]
    if metric is not None:
        m = r["metrics"]
        lines += ["| model | " + " | ".join(m["onnx"]) + " |", "| --- |" + " ---: |" * len(m["onnx"])]
        for label, key in (("ONNX in onnxruntime", "onnx"), ("ONNX, int8 MatMul inputs", "onnx_int8_matmul"),
                           ("torch artefact (unpacked)", "torch_artifact"), ("FP32 torch", "fp32")):
            lines.append(f"| {label} | " + " | ".join(f"{v:.6f}" for v in m[key].values()) + " |")
        lines.append("")
    agree = r["argmax_agreement"]
    lines += [f"ONNX outputs vs the unpacked torch artefact on the spec's test data ({r['compared_calls']} calls): max "
              f"relative error {r['max_relative_error']:.2e}"
              + (f", argmax (top-1) equal on {agree:.2%} of rows" if agree is not None else "")
              + f"; with onnxruntime's int8 MatMul inputs {r['int8_matmul_max_relative_error']:.2e}"
              + (f", {r['int8_matmul_argmax_agreement']:.2%}" if r["int8_matmul_argmax_agreement"] is not None else "")
              + ".", "",
              f"Latency on one calibration batch {lat['batch']}, {lat['rounds']} interleaved rounds (median ms): "
              + ", ".join(f"{k} {v:.2f}" for k, v in lat["median_ms"].items()) + ".", "",
              f"Quantised / FP32 ONNX latency: {q['median']:.3f} [{q['low']:.3f}, {q['high']:.3f}] as onnxruntime "
              f"runs it by default (DequantizeLinear on every call); {f['median']:.3f} [{f['low']:.3f}, "
              f"{f['high']:.3f}] with the weights dequantised once at load (session.disable_quant_qdq); "
              f"{i8['median']:.3f} [{i8['low']:.3f}, {i8['high']:.3f}] with int8 MatMul inputs (median per-round "
              "ratio, bootstrap 95% CI over rounds).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

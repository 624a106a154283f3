"""MiniLM's plan with its embedding tables planned (issue 36): the packed ratio `cetopt solve` prints against the
file `cetopt apply` writes, the weights the plan covers, and what quantising the tables costs in fidelity.

One run on the zoo's all-MiniLM-L6-v2 (pretrained, packaged): the default problem (cetopt.workflow.build_for:
default cost model, bit-widths, quantiser and rounding; every Linear and Embedding but the unused pooler) at
``--avg-bits``, solved by ``--solver``; the plan written as an artefact (write_artifact, what `cetopt apply` runs);
the same plan with the three tables left in FP32 (what the earlier default would have written) written too; both
artefacts loaded back and judged on the spec's test sentences (cosine to the FP32 embeddings).

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/minilm_coverage.py --threads 2 \
        --out benchmarks/results/minilm-coverage
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from cetopt._atomic import atomic_write_text


def rows_seen(spec, names: dict[str, nn.Module]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Rows of each table that the calibration batches look up (the rest carry no measured curvature)."""
    seen: dict[str, set[int]] = {n: set() for n in names}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, args: tuple) -> None:
            seen[name].update(int(i) for i in torch.unique(args[0]))
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in names.items()]
    try:
        with torch.no_grad():
            for batch in spec.calibration:
                spec.loss_fn(spec.model, batch)
    finally:
        for h in handles:
            h.remove()
    return {n: len(s) for n, s in seen.items()}


def main() -> None:
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.cli.problems import packed_ratio_line
    from cetopt.curvature.threads import configure_threads
    from cetopt.fingerprint import fingerprint_spec
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.pack import problem_packed_size
    from cetopt.quant.plan import Plan, plan_from_result
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a zoo model or file.py:function (minilm: the measurement)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--avg-bits", type=float, default=4.0)
    parser.add_argument("--solver", default="dp")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    configure_threads(args.threads)
    spec = load_model_spec(args.model)
    tables = {n: m for n, m in spec.model.named_modules() if isinstance(m, nn.Embedding)}
    start = time.perf_counter()
    built = build_for(spec, budget=Budget(avg_bits=args.avg_bits), target=args.model)
    build_s = time.perf_counter() - start
    problem = built.problem
    result = solve(problem, args.solver)
    plan = plan_from_result(problem, result, model=args.model)
    reported = problem_packed_size(problem, plan)
    assert reported is not None
    printed = packed_ratio_line(problem, plan)
    # the same plan, tables in FP32: its layers fingerprint is taken again over the layers it keeps (the weights
    # and calibration fingerprints, checked by write_artifact, still tie it to this model)
    kept = {n: c for n, c in plan.layers.items() if n not in tables}
    without = replace(plan, layers=kept, bits={}, extra={**plan.extra, "fingerprint_layers": fingerprint_spec(
        spec, list(kept)).as_metadata()["fingerprint_layers"]})
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, p in (("tables planned", plan), ("tables in FP32", without)):
            info = write_artifact(spec, p, Path(tmp) / label.replace(" ", "-"), target=args.model)
            loaded = load_compressed(Path(tmp) / label.replace(" ", "-"), spec)
            runs[label] = {"file_bytes": info.file_bytes, "data_bytes": info.data_bytes,
                           "predicted_bytes": info.predicted_bytes, "fp32_bytes": info.size.fp32_bits // 8,
                           "file_ratio": info.size.fp32_bits / 8 / info.file_bytes,
                           "packed_ratio": info.size.ratio, "metrics": spec.metrics(loaded.model)}
    planned = runs["tables planned"]
    coverage = problem.metadata["coverage"]
    summary = {
        "model": args.model, "threads": args.threads, "avg_bits": args.avg_bits, "solver": args.solver,
        "method": problem.metadata.get("method"), "problem": problem.name, "build_s": build_s,
        "load_1min": os.getloadavg()[0], "torch": torch.__version__,
        "layers": len(problem.layers), "tables": {n: {"shape": list(m.weight.shape), "bits": plan.layers[n].bits}
                                                  for n, m in tables.items() if n in plan.layers},
        "rows_seen": rows_seen(spec, tables), "weights": coverage["weights"],
        "trace_estimator": coverage.get("trace_estimator"),
        "solve_printed": printed, "solve_ratio": reported.ratio, "solve_bytes": reported.total_bytes,
        "apply_file_ratio": planned["file_ratio"],
        "solve_over_file": reported.ratio / planned["file_ratio"], "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(summary, indent=1) + "\n")
    w = coverage["weights"]
    lines = [f"# {args.model}: embedding tables in the plan", "",
             f"Generated by `python benchmarks/minilm_coverage.py --model {args.model} --threads {args.threads} --avg-bits {args.avg_bits} "
             f"--solver {args.solver} --out {args.out}` (torch {torch.__version__}, one run; 1-minute load "
             f"{summary['load_1min']:.1f} at the end): the default problem `{problem.name}` "
             f"({len(problem.layers)} layers, method {summary['method']}, built in {build_s:.0f} s), solved by "
             f"{args.solver} at {args.avg_bits} average bits, applied with `write_artifact` (`cetopt apply`).", "",
             f"- weights: {w['planned_count']} planned ({w['planned_share']:.1%} of the parameters), "
             f"{w['kept_count']} kept in FP32; the tables: "
             + ", ".join(f"{n} {t['shape'][0]}x{t['shape'][1]} at {t['bits']} bits ({summary['rows_seen'][n]} rows "
                         "looked up by the calibration text)" for n, t in summary["tables"].items()) + ".",
             f"- `cetopt solve` prints: \"{printed}\".",
             f"- the file `cetopt apply` writes: {planned['file_bytes']} bytes, FP32 / file = "
             f"**{planned['file_ratio']:.3f}x**; printed / written = **{summary['solve_over_file']:.4f}** "
             f"(the file adds its safetensors header to the packed size {planned['predicted_bytes']} bytes).", "",
             "| plan | file bytes | FP32 / file | " + " | ".join(planned["metrics"]) + " |",
             "|---|---:|---:|" + "---:|" * len(planned["metrics"])]
    lines += [f"| {label} | {r['file_bytes']} | {r['file_ratio']:.3f}x | "
              + " | ".join(f"{v:.4f}" for v in r["metrics"].values()) + " |" for label, r in runs.items()]
    lines += ["", "\"tables in FP32\" is the same plan with the embedding tables left unquantised (the default "
              "before tables were planned); its metrics show what quantising the tables costs in fidelity."]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

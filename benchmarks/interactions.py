"""Do the theory's cross-layer terms repair the default's plan where its costs do not add up? On MobileNetV2
(prove check 6: additivity fails) the default problem with exact adjacent-layer terms d_a'H_ab d_b
(``cetopt extract --interactions``, solved exactly by HiGHS, since dp takes no pairwise terms) against the default's
dp plan without them and HAWQ-V3's, at 3, 4 and 5 average bits, on the 384 test crops of
benchmarks/cost_models_pretrained.py (top-1 agreement with FP32, 95% CIs resampling the test photos) and the validation loss
change. The extra build time of the terms is reported beside.

    OMP_NUM_THREADS=2 python benchmarks/interactions.py --cache-dir .cache/bench-signals --out benchmarks/results/interactions
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_models_pretrained as pretrained  # noqa: E402  (the same test crops, caches and priced problems)

AVG_BITS = (3.0, 4.0, 5.0)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cetopt.curvature import keep_freed_memory
    from cetopt.measure import Measurer
    from cetopt.problem.model import Budget
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.solvers.api import solve
    from cetopt.stats import paired_ci
    from cetopt.tables import ci_cell
    from cetopt.workflow import build_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="", help="the priced problems of cost_models_pretrained.py (reused)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "interactions"))
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    case = pretrained.mobilenet_case(args.crops)
    cache = Path(args.cache_dir) / "mobilenetv2-signals.pt" if args.cache_dir else None
    _, problems, _ = pretrained.cached_problems(case["spec"], cache)
    start = time.perf_counter()
    plain = build_for(case["spec"], bits=pretrained.BITS, quantizer=QuantizerSpec(clip=pretrained.CLIP))
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    inter = build_for(case["spec"], bits=pretrained.BITS, interactions=True,
                      quantizer=QuantizerSpec(clip=pretrained.CLIP))
    inter_s = time.perf_counter() - start
    measurer = Measurer(case["spec"])
    rows = []
    for avg in AVG_BITS:
        budget = Budget(avg_bits=avg)
        solved = solve(inter.problem.with_budget(budget), "highs", time_limit=300)
        plans = {DEFAULT_COST_MODEL: dict(solve(problems[DEFAULT_COST_MODEL].with_budget(budget), "dp").bits),
                 "hawq-v3": dict(solve(problems["hawq-v3"].with_budget(budget), "dp").bits),
                 f"{DEFAULT_COST_MODEL}+interactions": dict(solved.bits)}
        outcomes = {k: case["outcomes"](measurer.model_with(inter.compressed_weights(b)))["top1_agreement"]
                    for k, b in plans.items()}
        for label, values in outcomes.items():
            row: dict[str, Any] = {"avg_bits": avg, "plan": label, "top1_agreement": float(values.mean()),
                                   "validation_dloss": measurer.validation_dloss(inter.compressed_weights(plans[label])),
                                   "solver_status": solved.status.value if "interactions" in label else "optimal"}
            for other in ("hawq-v3", DEFAULT_COST_MODEL):
                if other != label:
                    ci = paired_ci(values, outcomes[other], case["clusters"]["top1_agreement"], n_boot=4000, seed=0)
                    row[f"vs_{other}"] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "ci_method": ci.method,
                                          "verdict": {"a": "better", "b": "worse"}.get(ci.verdict, "tie")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"command": "python benchmarks/interactions.py" + "".join(" " + a for a in (argv or [])),
            "default": DEFAULT_COST_MODEL, "build_seconds": plain_s, "build_seconds_interactions": inter_s,
            "terms": len(inter.problem.interactions), "torch_threads": args.threads, "test": case["test"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from cetopt.results.provenance import record_for

    version = record_for(out.with_suffix(".json").resolve(), "benchmarks/interactions.py")
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows, "code_version": version},
                                                           indent=1))

    def cell(row: dict[str, Any], other: str) -> str:
        return ci_cell(row.get(f"vs_{other}"))

    lines = ["# MobileNetV2: the default with and without cross-layer terms", "",
             f"`{meta['command']}`; generated, do not edit. Test: {meta['test']}. The default problem built in "
             f"{plain_s:.0f} s; with its {meta['terms']} adjacent-layer terms in {inter_s:.0f} s (one after the other in "
             f"one process, {args.threads} torch threads). Top-1 agreement x100, paired bootstrap 95% CIs.", "",
             f"| avg bits | plan | top-1 agreement | validation dL | vs HAWQ-V3 | vs {DEFAULT_COST_MODEL} |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['avg_bits']:g} | {r['plan']} | {100 * r['top1_agreement']:.2f} | {r['validation_dloss']:.4f} | "
              f"{cell(r, 'hawq-v3')} | {cell(r, DEFAULT_COST_MODEL)} |" for r in rows]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The default pipeline on models that are not in the zoo, loaded the way a user loads theirs (``file.py:function``
returning a ModelSpec; see benchmarks/user_models/): the default cost model's dp plan, and ``cetopt plan``'s measured
selection (that plan or HAWQ-V3's, whichever changes the held-out loss less: cetopt.rerank with the default pool),
vs HAWQ-V3's and uniform precision at equal average bits, every plan applied on the default problem's grid, compared
per test example with paired bootstrap 95% CIs. Nothing here is tuned to these models: each is run once, with the
library's defaults.

    python benchmarks/user_check.py --threads 2 --out benchmarks/results/user-check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from cetopt._atomic import atomic_write_text
from cetopt.tables import ci_cell

TARGETS = ("benchmarks/user_models/mobilenetv2_distill.py:spec", "benchmarks/user_models/minilm_cls.py:spec")
AVG_BITS = (3.0, 4.0, 5.0)


def check(target: str, objective: str | None = None) -> dict[str, Any]:
    """One model: its default and HAWQ-V3 problems, plans at each budget, per-example outcomes, paired CIs.

    ``objective``: None / "task" keeps the spec's own loss; "fidelity" plans for KL / output distance to FP32
    (:meth:`cetopt.ModelSpec.as_fidelity`), as ``cetopt plan --objective fidelity`` does."""
    from cetopt.baselines import hawq_v3_bits, hawq_v3_problem, uniform_bits
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.plan import problem_quantizer
    from cetopt.rerank import DEFAULT_POOL, pool_bits, rerank, selection_measure
    from cetopt.solvers.api import solve
    from cetopt.workflow import DEFAULT_BITS, build_for

    t0 = time.perf_counter()
    spec = load_model_spec(target, objective=objective)
    if spec.test_outcomes is None:
        raise SystemExit(f"{target}: the ModelSpec needs test_outcomes (per-example metric) for paired CIs")
    built = build_for(spec, target=target)
    hawq = hawq_v3_problem(spec, DEFAULT_BITS, quantizer=problem_quantizer(built.problem))
    build_s = time.perf_counter() - t0
    measurer = Measurer(spec)  # one working copy of the model, each plan's weights swapped in

    def outcomes(bits: Mapping[str, int]) -> np.ndarray:
        return np.asarray(spec.test_outcomes(measurer.model_with(built.compressed_weights(bits))), dtype=float)

    fp = np.asarray(spec.test_outcomes(spec.model), dtype=float)
    rows = []
    for b in AVG_BITS:
        result = solve(built.problem.with_budget(Budget(avg_bits=b)), "dp")
        if not result.success:
            raise SystemExit(f"{target}: the default problem has no plan at {b:g} average bits ({result.status.value})")
        plans = {DEFAULT_COST_MODEL: dict(result.bits), "hawq-v3": hawq_v3_bits(hawq, b),
                 "uniform": uniform_bits(built.problem, b)}
        # cetopt plan's selection: the default optimum and the default pool's plans, measured on held-out batches
        # (the test examples play no part); HAWQ-V3's plan is the one solved above
        measure, split = selection_measure(measurer)
        hawq_plan = plans["hawq-v3"] if "hawq-v3" in DEFAULT_POOL else None
        pool = {**({} if hawq_plan is None else {"hawq-v3": hawq_plan}),
                **pool_bits(spec, built.problem.with_budget(Budget(avg_bits=b)),
                            [name for name in DEFAULT_POOL if name != "hawq-v3"])}
        selection = rerank(dataclasses.replace(built, problem=built.problem.with_budget(Budget(avg_bits=b))), measure, 1,
                           pool=pool)
        plans["plan"] = dict(selection.best.bits)
        scored = {m: outcomes(p) for m, p in plans.items() if p is not None}
        mine = scored[DEFAULT_COST_MODEL]
        row: dict[str, Any] = {"avg_bits": b, "n_test": int(len(mine)), "fp32": float(fp.mean()),
                               "avg_bits_used": result.avg_bits, "selection_split": split,
                               "selected": selection.best.label,
                               "selection": {p.label: p.measured for p in selection.plans},
                               "means": {m: float(o.mean()) for m, o in scored.items()},
                               # per test example, so runs of one model (e.g. task vs fidelity objective) pair up
                               "outcomes": {m: o.tolist() for m, o in scored.items()}}
        for label, values in ((DEFAULT_COST_MODEL, mine), ("plan", scored["plan"])):
            for other in ("hawq-v3", "uniform"):
                key = f"vs_{other}" if label == DEFAULT_COST_MODEL else f"plan_vs_{other}"
                if other in scored:
                    ci = spec.paired_ci(values, scored[other], n_boot=2000, seed=0)  # by source when the spec says
                    row[key] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "ci_method": ci.method,
                                "verdict": {"a": "better", "b": "worse"}.get(ci.verdict, "tie")}
                else:
                    row[key] = None
        rows.append(row)
        print(json.dumps({"target": target, **row}), flush=True)
    return {"target": target, "objective": objective or "task", "model": spec.name, "data": spec.data,
            "layers": len(built.problem.layers), "fp32_outcomes": fp.tolist(),
            "clusters": None if spec.test_clusters is None else [str(c) for c in spec.test_clusters],
            "grid": problem_quantizer(built.problem).clip, "method": DEFAULT_COST_MODEL, "build_s": build_s,
            "seconds": time.perf_counter() - t0, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objective", choices=("task", "fidelity"), default="task",
                        help="the spec's own loss (default) or fidelity to the FP32 outputs")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    from cetopt.curvature import keep_freed_memory
    from cetopt.curvature.threads import configure_threads

    keep_freed_memory()
    configure_threads(args.threads)
    models = [check(t, args.objective) for t in args.targets.split(",") if t]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from cetopt.results.provenance import record_for
    from cetopt.results.recipe import current_recipe, drift

    version = record_for(args.out.with_suffix(".json").resolve(), "benchmarks/user_check.py")
    # the recipe judged, and whether it is the frozen one (docs/protocol.md: evaluation judges the frozen recipe)
    recipe = {"recipe": current_recipe(), "drift_from_frozen": {k: list(v) for k, v in drift().items()}}
    atomic_write_text(args.out.with_suffix(".json"),
                      json.dumps({"threads": args.threads, "torch": torch.__version__, "models": models,
                                  "recipe": recipe, "code_version": version}, indent=1) + "\n")
    lines = ["# The default pipeline on models outside the zoo", "",
             f"Generated by `python benchmarks/user_check.py --targets {args.targets} --objective {args.objective} "
             f"--threads {args.threads} --out "
             f"{args.out}` (torch {torch.__version__}). Each model is loaded as a user loads theirs (`file.py:function`"
             " returning a ModelSpec), built once with the library defaults (cost model, quantiser grid, curvature "
             "settings), nothing tuned. Plans solved by dp; HAWQ-V3's on its own problem priced on the same grid; "
             "every plan applied with the default problem's candidates. `cetopt plan` is the measured selection "
             "(the default plan or HAWQ-V3's, the one whose loss change on held-out batches is smaller; `selected` "
             "says which). Metric x100, paired bootstrap 95% CIs over the same test examples.", ""]
    for m in models:
        lines += [f"## {m['model']} (`{m['target']}`)", "", f"{m['data']}; {m['layers']} layers; grid clipping "
                  f"{m['grid']}; objective {m.get('objective', 'task')}; default cost model `{m['method']}`; "
                  f"build {m['build_s']:.0f} s, all {m['seconds']:.0f} s.",
                  "", f"| avg bits | test examples | FP32 | {m['method']} | HAWQ-V3 | uniform | vs HAWQ-V3 | vs uniform | "
                  "`cetopt plan` (selected) | plan vs HAWQ-V3 | plan vs uniform |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            means = r["means"]
            lines.append(f"| {r['avg_bits']:g} | {r['n_test']} | {100 * r['fp32']:.2f} | {100 * means[m['method']]:.2f} | "
                         + " | ".join(f"{100 * means[k]:.2f}" if k in means else "-" for k in ("hawq-v3", "uniform"))
                         + f" | {ci_cell(r['vs_hawq-v3'])} | {ci_cell(r['vs_uniform'])} | {100 * means['plan']:.2f} "
                         f"({r['selected']}, {r['selection_split']}) | {ci_cell(r['plan_vs_hawq-v3'])} | "
                         f"{ci_cell(r['plan_vs_uniform'])} |")
        lines.append("")
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()

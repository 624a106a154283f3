"""Can any plan be clearly better than uniform precision on the small digits models? Issue 12 asks the default to be
"clearly better than uniform" on every zoo model; on digits-mlp (3 and 4 bits) and digits-cnn (4 bits) no method is.
This asks whether any allocation could be: every plan of the candidate widths within the budget is enumerated
(digits-mlp: 3 layers, digits-cnn: 4), and the one with the best test accuracy is picked ON THE TEST SET, an oracle
that no method can beat and that overstates what selection could reach. If even the oracle's paired bootstrap 95%
CI against uniform includes 0, "clearly better than uniform" cannot be shown with this test set at that budget.

Per model, zoo seeds 0, 1, 2, the default problem's candidates (its grid): accuracy pooled over the seeds' test sets
(paired within a seed, as benchmarks/cost_models.py pools them). The oracle picks one plan per seed. Writes
``benchmarks/results/uniform-ceiling.{json,md}``::

    OMP_NUM_THREADS=1 python benchmarks/uniform_ceiling.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODELS = ("digits-mlp", "digits-cnn")
SEEDS = (0, 1, 2)
AVG_BITS = (3.0, 4.0)
OUT = Path(__file__).resolve().parent / "results" / "uniform-ceiling"


def seed_outcomes(model: str, seed: int) -> dict[float, dict[str, Any]]:
    """Budget -> the uniform plan's, the default dp plan's and the test-oracle plan's per-example outcomes (one seed)."""
    from cetopt.baselines import uniform_bits
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.evaluate import choices_from_bits, evaluate
    from cetopt.problem.model import Budget
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    spec = load_model_spec(model, seed=seed)
    built = build_for(spec)
    measurer = Measurer(spec)
    layers = built.problem.layers
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def outcomes(choices: dict[str, int]) -> np.ndarray:
        key = tuple(choices[layer.name] for layer in layers)
        if key not in cache:
            model_q = measurer.model_with(built.weights_for_choices(choices))
            cache[key] = np.asarray(spec.test_outcomes(model_q), dtype=float)
        return cache[key]

    out = {}
    for avg in AVG_BITS:
        problem = built.problem.with_budget(Budget(avg_bits=avg))
        feasible = [dict(zip(problem.layer_names, combo))
                    for combo in itertools.product(*(range(len(layer.choices)) for layer in layers))
                    if evaluate(problem, dict(zip(problem.layer_names, combo))).feasible]
        scored = [(outcomes(c).mean(), i) for i, c in enumerate(feasible)]
        best = feasible[max(scored)[1]]
        uniform = uniform_bits(problem, avg)
        assert uniform is not None, f"{avg} bits is a candidate width of every layer"
        out[avg] = {"plans": len(feasible), "uniform": outcomes(choices_from_bits(problem, uniform)),
                    "default": outcomes(dict(solve(problem, "dp").choices)), "oracle": outcomes(best),
                    "oracle_bits": {layer.name: layer.choices[best[layer.name]].bits for layer in layers}}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cetopt.stats import paired_bootstrap_ci
    from cetopt.tables import ci_cell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for model in MODELS:
        per_seed = {seed: seed_outcomes(model, seed) for seed in SEEDS}
        for avg in AVG_BITS:
            pooled = {k: np.concatenate([per_seed[s][avg][k] for s in SEEDS]) for k in ("uniform", "default", "oracle")}
            row: dict[str, Any] = {"model": model, "avg_bits": avg, "n_test": int(pooled["uniform"].size),
                                   "plans_per_seed": [per_seed[s][avg]["plans"] for s in SEEDS],
                                   "oracle_bits": [per_seed[s][avg]["oracle_bits"] for s in SEEDS],
                                   **{f"{k}_accuracy": float(v.mean()) for k, v in pooled.items()}}
            for k in ("default", "oracle"):
                ci = paired_bootstrap_ci(pooled[k], pooled["uniform"], n_boot=4000, seed=0)
                row[f"{k}_vs_uniform"] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high,
                                          "verdict": {"a": "better", "b": "worse"}.get(ci.verdict, "tie")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"command": "python benchmarks/uniform_ceiling.py" + "".join(" " + a for a in (argv or [])),
            "seeds": list(SEEDS), "default": DEFAULT_COST_MODEL, "seconds": time.perf_counter() - start}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Could any plan be clearly better than uniform on the digits models?", "",
             f"`{meta['command']}`, {meta['seconds']:.0f} s; generated, do not edit. Zoo seeds "
             f"{', '.join(map(str, SEEDS))}, test sets pooled. 'oracle' = the plan with the best test accuracy among "
             "all plans within the budget, chosen on the test set itself (an upper bound, not a method). Accuracy "
             "x100, paired bootstrap 95% CIs against uniform.", "",
             f"| model | avg bits | test examples | plans per seed | uniform | {DEFAULT_COST_MODEL} (dp) | oracle | "
             f"{DEFAULT_COST_MODEL} vs uniform | oracle vs uniform |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['avg_bits']:g} | {r['n_test']} | {'/'.join(map(str, r['plans_per_seed']))} | "
              f"{100 * r['uniform_accuracy']:.2f} | {100 * r['default_accuracy']:.2f} | {100 * r['oracle_accuracy']:.2f} | "
              f"{ci_cell(r['default_vs_uniform'])} | {ci_cell(r['oracle_vs_uniform'])} |" for r in rows]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

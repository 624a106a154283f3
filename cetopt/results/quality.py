"""Measured quality of CET vs HAWQ-V3 vs uniform on the small zoo models, over seeds and calibration draws,
with paired confidence intervals; and the README sections generated from it.

``python -m cetopt.results.quality --out docs/results/quality`` runs the experiment (minutes on 2 cores)
and writes ``results.json``. Every comparison is built on ONE model: the CET problem, the HAWQ-V3 problem
and the uniform plan come from the same ModelSpec (its fingerprint is recorded per seed), and all plans
use the same quantiser, so only the allocation differs. Per seed, the difference of test accuracy is a
paired bootstrap CI over test examples; over seeds, a Student-t CI of the per-seed differences. A
difference whose CI contains 0 is written "tie within CI".

The section generators (``quality_section``, ``zoo_section``, ``checks_section``) read committed files
only: docs/results/quality/results.json, cetopt/data/zoo/manifest.json, docs/results/cet-checks/*/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from cetopt._atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "quality" / "results.json"
CHECKS_DIR = ROOT / "docs" / "results" / "cet-checks"
MODELS = ("digits-mlp", "digits-cnn", "mnist1d-resnet")
SEEDS = (0, 1, 2, 3, 4)
CALIBRATION_DRAWS = (1, 2, 3)  # extra calibration draws on seed 0 (the default draw is the first examples)
AVG_BITS = (3.0, 4.0)
CANDIDATE_BITS = (2, 3, 4, 6, 8)
# the plans compared with the baselines: the default cost model (cetopt.costmodels.DEFAULT_COST_MODEL) and the
# theory's plain second-order cost
PLAN_METHODS = ("cet-upper", "cet")
BASELINES = ("hawq-v3", "uniform")
METHODS = (*PLAN_METHODS, *BASELINES)
N_BOOT = 2000


def _plan_row(spec: Any, measurer: Any, built: Any, bits: dict[str, int] | None) -> dict[str, Any] | None:
    """Apply ``bits`` (the CET problem's candidates: same quantiser for every method) and measure it."""
    import numpy as np

    from cetopt.quant.apply import apply_plan
    from cetopt.quant.plan import Plan

    if bits is None:
        return None
    weights = built.compressed_weights(bits)
    outcomes = np.asarray(spec.test_outcomes(measurer.model_with(weights)), dtype=float)
    m = measurer.measure(weights)
    params = {layer.name: layer.params for layer in built.problem.layers}
    avg = sum(params[n] * b for n, b in bits.items()) / sum(params.values())
    return {"bits": bits, "avg_bits": avg, "packed_ratio": apply_plan(spec.model, Plan(bits=bits)).ratio,
            "test_accuracy": float(outcomes.mean()), "calibration_dloss": m.calibration_dloss,
            "validation_dloss": m.validation_dloss, "outcomes": outcomes}


def _plans(spec: Any, avg_bits: Sequence[float]) -> dict[str, Any]:
    """CET, HAWQ-V3 and uniform plans of one ModelSpec at each budget, measured, with paired CIs."""
    from cetopt.baselines import hawq_v3_bits, hawq_v3_problem, uniform_bits
    from cetopt.fingerprint import fingerprint_spec
    from cetopt.measure import Measurer
    from cetopt.problem.model import Budget
    from cetopt.solvers.api import solve
    from cetopt.stats import paired_bootstrap_ci
    from cetopt.workflow import build_for

    built = {m: build_for(spec, method=m, bits=CANDIDATE_BITS) for m in PLAN_METHODS}
    hawq = hawq_v3_problem(spec, CANDIDATE_BITS)
    measurer = Measurer(spec)
    fp_outcomes = spec.test_outcomes(spec.model)
    out: dict[str, Any] = {"fingerprint": fingerprint_spec(spec).as_metadata(), "metadata": {
        k: v for k, v in spec.metadata.items() if isinstance(v, (str, int, float))},
        "fp_accuracy": float(fp_outcomes.mean()), "test_examples": int(len(fp_outcomes)), "budgets": {}}
    reference = built[PLAN_METHODS[0]]  # every built problem holds the same candidates; any applies the baselines
    for b in avg_bits:
        bits: dict[str, Any] = {}
        for m in PLAN_METHODS:
            result = solve(built[m].problem.with_budget(Budget(avg_bits=b)), "dp")
            bits[m] = dict(result.bits) if result.success else None
        bits["hawq-v3"] = None if (h := hawq_v3_bits(hawq, b)) is None else dict(h)
        bits["uniform"] = uniform_bits(reference.problem, b)
        rows = {k: _plan_row(spec, measurer, reference, v) for k, v in bits.items()}
        paired = {}
        for plan in PLAN_METHODS:
            for other in (*BASELINES, *(m for m in PLAN_METHODS if m != plan)):
                if rows[plan] is not None and rows[other] is not None and f"{other}-{plan}" not in paired:
                    ci = paired_bootstrap_ci(rows[plan]["outcomes"], rows[other]["outcomes"], n_boot=N_BOOT, seed=0)
                    paired[f"{plan}-{other}"] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high,
                                                 "verdict": ci.verdict,
                                                 "same_plan": rows[plan]["bits"] == rows[other]["bits"]}
        for row in rows.values():
            if row is not None:
                row.pop("outcomes")
        out["budgets"][f"{b:g}"] = {"plans": rows, "paired": paired}
    return out


def run(out: Path = RESULTS.parent, models: Sequence[str] = MODELS, seeds: Sequence[int] = SEEDS,
        draws: Sequence[int] = CALIBRATION_DRAWS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the experiment and write ``out/results.json``."""
    import torch

    from cetopt._versions import package_versions
    from cetopt.modelspec import load_model_spec

    data: dict[str, Any] = {"format": "cetopt.quality/2", "plan_methods": list(PLAN_METHODS), "avg_bits": list(AVG_BITS),
                            "candidate_bits": list(CANDIDATE_BITS), "n_boot": N_BOOT, "models": {},
                            "environment": {"versions": package_versions(), "machine": platform.machine(),
                                            "threads": torch.get_num_threads()}}
    for model in models:
        entry: dict[str, Any] = {"seeds": {}, "draws": {}}
        for seed in seeds:
            start = time.perf_counter()
            entry["seeds"][str(seed)] = _plans(load_model_spec(model, seed=seed), AVG_BITS)
            log(f"{model} seed {seed}: {time.perf_counter() - start:.0f} s")
        for draw in draws:
            start = time.perf_counter()
            entry["draws"][str(draw)] = _plans(load_model_spec(model, seed=0, calibration_seed=draw), AVG_BITS[:1])
            log(f"{model} seed 0, calibration draw {draw}: {time.perf_counter() - start:.0f} s")
        data["models"][model] = entry
        atomic_write_text(out / "results.json", json.dumps(data, indent=1, default=str) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m cetopt.results.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS.parent)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--draws", nargs="*", type=int, default=list(CALIBRATION_DRAWS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same numbers on any thread setting of this machine
    run(args.out, args.models, args.seeds, args.draws)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""benchmarks/fp_xint.py: the verdicts in the results file follow from the per-seed numbers (fabricated runs
where the claim holds, fails or cannot be told), and a small real run writes a markdown file that --render-only
reproduces from its json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("fp_xint_benchmark", ROOT / "benchmarks" / "fp_xint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fp_xint_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def _run(seed: int, fp: float, acc: dict[int, float]) -> dict[str, Any]:
    points = []
    for k, a in acc.items():
        points.append({"bits": 4, "terms": k, "bits_per_weight": 4 * k, "weight_rel_error": 0.1 / 10 ** k,
                       "max_rate": 0.1, "output_rel_error": 0.1 / 10 ** k, "accuracy": a, "loss": 0.1,
                       "layer_gap": 1e-7, "model_sum_rel_error": 0.05, "model_sum_accuracy": a,
                       "model_sum_vs_first": 0.0, "parallel_gap": 0.0,
                       "plain_accuracy": fp if 4 * k <= 16 else None, "plain_loss": 0.1 if 4 * k <= 16 else None})
    return {"model": "m", "seed": seed, "fp_accuracy": fp, "fp_loss": 0.1, "n_test": 1000, "weights": None,
            "points": points, "axioms": [{"op": "AbelianAdd", "errors": {"identity": 0.0}, "failed": []},
                                         {"op": "AbelianMul", "errors": {"identity": 0.0}, "failed": []}]}


def test_verdicts_follow_the_seed_numbers() -> None:
    bench = _load()
    fp = [0.90, 0.91, 0.92, 0.93, 0.94]
    above = [_run(s, f, {1: f + 0.01 + 0.002 * s, 2: f}) for s, f in enumerate(fp)]
    out = bench.analyse(above, [4], [1, 2])["models"]["m"]
    assert out["above_fp"]["1"]["verdict"] == "pass" and out["above_fp"]["2"]["verdict"] == "fail"  # K=2 equals FP
    assert out["above_fp_verdict"] == "pass" and out["convergence_verdict"] == "pass"
    below = [_run(s, f, {1: f - 0.02 - 0.001 * s, 2: f - 0.01 - 0.001 * s}) for s, f in enumerate(fp)]
    assert bench.analyse(below, [4], [1, 2])["models"]["m"]["above_fp_verdict"] == "fail"
    mixed = [_run(s, f, {1: f + (0.01 if s % 2 else -0.01), 2: f}) for s, f in enumerate(fp)]
    assert bench.analyse(mixed, [4], [1, 2])["models"]["m"]["above_fp_verdict"] == "inconclusive"
    stuck = [_run(s, f, {1: f, 2: f}) for s, f in enumerate(fp)]
    for r in stuck:  # a series whose second term removes nothing: convergence fails
        r["points"][1]["max_rate"] = 1.0
    assert bench.analyse(stuck, [4], [1, 2])["models"]["m"]["convergence_verdict"] == "fail"


def test_a_small_run_writes_results_that_render_from_the_json(tmp_path: Path) -> None:
    bench = _load()
    out = tmp_path / "fp-xint"
    assert bench.main(["--models", "digits-mlp", "--seeds", "0,1", "--bits", "3,4", "--terms", "1,2",
                       "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    text = out.with_suffix(".md").read_text()
    assert "## Verdicts" in text and "4-bit above FP accuracy" in text
    runs = data["runs"]
    m = data["analysis"]["models"]["digits-mlp"]
    for k in ("1", "2"):  # per-seed differences are the runs' accuracies minus FP, recomputed here
        expected = [next(p["accuracy"] for p in r["points"] if p["bits"] == 4 and p["terms"] == int(k))
                    - r["fp_accuracy"] for r in runs]
        assert m["above_fp"][k]["per_seed"] == expected
    assert m["axioms"]["verdict"] == "pass" and m["granularity"]["verdict"] == "pass"
    assert m["timing"]["terms"] == 3 and all(m["timing"][k] > 0 for k in ("tensor", "model_batched"))
    assert "sequential / batched" in text
    assert data["code_version"]["files"][0] == "benchmarks/fp_xint.py" and len(data["code_version"]["sha256"]) == 64
    assert bench.main(["--out", str(out), "--render-only"]) == 0
    assert out.with_suffix(".md").read_text() == text

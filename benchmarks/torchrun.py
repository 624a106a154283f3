"""torchrun with N ranks against one process: the same problem file, and the wall time of each.

For each model, ``cetopt extract MODEL`` runs as one process (``--threads N``: the machine's cores to itself) and
as ``torchrun --nproc-per-node N -m cetopt --threads 1 extract MODEL`` (N ranks sharing the calibration batches,
one thread each), each from a cold curvature cache (a fresh ``CETOPT_CACHE_DIR`` per run), interleaved over
``--rounds`` rounds (cetopt.bench.timing). The problem files of the two are compared choice by choice: the largest
and the median relative difference of the predicted loss changes (each |a - b| / max(|a|, |b|); a choice where
both are below 1e-12 counts as equal), the largest difference in units of the choice's own standard error
(``loss_stderr``), whether every other field (sizes, bits, budgets) is identical, and whether ``dp`` picks the same
plan from both files (the difference that matters to a user).

    python benchmarks/torchrun.py --models digits-cnn mnist1d-resnet --rounds 3
    python benchmarks/torchrun.py --models mobilenetv2 --rounds 1 --part mobilenetv2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cetopt._atomic import atomic_write_text
from cetopt.bench.timing import ProcessRun, compare, run_process
from cetopt.problem.io import load_problem
from cetopt.solvers.api import solve

RESULTS = Path(__file__).parent / "results"
TINY = 1e-12  # losses this small on both sides count as equal (float32 sums around zero)


def commands(model: str, out: Path, ranks: int, extra: list[str]) -> dict[str, list[str]]:
    """The one-process and the torchrun command lines writing ``out/one.json`` and ``out/ranks.json``."""
    python = sys.executable
    return {"one process": [python, "-m", "cetopt", "--threads", str(ranks), "extract", model, *extra,
                            "--out", str(out / "one.json")],
            f"torchrun {ranks} ranks": [python, "-m", "torch.distributed.run", "--standalone",
                                        f"--nproc-per-node={ranks}", "-m", "cetopt", "--threads", "1", "extract",
                                        model, *extra, "--out", str(out / "ranks.json")]}


def difference(one: Path, ranks: Path) -> dict[str, Any]:
    """Choice-by-choice comparison of two problem files of the same model."""
    a, b = load_problem(one), load_problem(ranks)
    same_shape = [layer.name for layer in a.layers] == [layer.name for layer in b.layers] and all(
        [c.bits for c in la.choices] == [c.bits for c in lb.choices] for la, lb in zip(a.layers, b.layers))
    if not same_shape:
        return {"same_layers_and_choices": False}
    x = np.array([c.loss for layer in a.layers for c in layer.choices])
    y = np.array([c.loss for layer in b.layers for c in layer.choices])
    scale = np.maximum(np.abs(x), np.abs(y))
    rel = np.where(scale < TINY, 0.0, np.abs(x - y) / np.where(scale < TINY, 1.0, scale))
    sizes_equal = all(la.size_bits(ca) == lb.size_bits(cb) for la, lb in zip(a.layers, b.layers)
                      for ca, cb in zip(la.choices, lb.choices))
    worst = int(rel.argmax())
    stderr = np.array([np.nan if c.loss_stderr is None else c.loss_stderr for layer in a.layers for c in layer.choices])
    over_se = np.abs(x - y) / np.where(stderr > 0, stderr, np.nan)
    plan_a, plan_b = solve(a, "dp"), solve(b, "dp")
    return {"same_layers_and_choices": True, "choices": int(x.size), "max_relative_difference": float(rel.max()),
            "median_relative_difference": float(np.median(rel)), "sizes_equal": sizes_equal,
            "budget_equal": a.max_size_bits == b.max_size_bits, "worst_choice": worst,
            "worst_values": [float(x[worst]), float(y[worst])],
            "worst_stderr": None if np.isnan(stderr[worst]) else float(stderr[worst]),
            # the difference against the estimate's own standard error: far below 1 means it cannot matter
            "max_difference_over_stderr": None if np.all(np.isnan(over_se)) else float(np.nanmax(over_se)),
            # None when dp could not solve one of them: no plan is no evidence of the same plan
            "same_dp_plan": (dict(plan_a.choices) == dict(plan_b.choices)) if plan_a.success and plan_b.success
            else None}


def bench_model(model: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cetopt-dist-"))
    runs: dict[str, list[ProcessRun]] = {}
    try:
        cmds = commands(model, work, args.ranks, args.extract_args)

        def cold(argv: list[str]) -> ProcessRun:
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))  # no curvature cached from a previous run
            env = {**os.environ, "CETOPT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
            try:
                return run_process(argv, env=env)
            finally:
                shutil.rmtree(cache, ignore_errors=True)

        timing = compare({name: (lambda a=argv: lambda: cold(a))() for name, argv in cmds.items()},
                         rounds=args.rounds, warmup=0,
                         after_call=lambda name, value: runs.setdefault(name, []).append(value))
        one, many = list(cmds)
        return {"model": model, "ranks": args.ranks, "timing": timing.to_dict(),
                "speedup": vars(timing.ratio(one, many)),
                "peak_rss_bytes": {n: max(r.max_rss_bytes for r in rs) for n, rs in runs.items()},
                "difference": difference(work / "one.json", work / "ranks.json")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _pair(values: list[float] | None) -> str:
    return "-" if not values else f"{values[0]:.3g} vs {values[1]:.3g}"


def report(data: dict[str, Any]) -> str:
    lines = [f"# torchrun vs one process ({data['meta']['command']})", "",
             f"Wall seconds of `cetopt extract` from a cold curvature cache, median [min-max] over interleaved rounds; "
             f"one process with --threads N, torchrun with N ranks of 1 thread; python {data['meta']['python']}.", "",
             "| model | ranks | rounds | one process s | torchrun s | speedup | peak RSS MiB, largest process (one / torchrun) | "
             "choices | max rel. diff. of predicted dL (values) | median rel. diff. | max diff. / its SE | sizes equal | "
             "same dp plan |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        sec = row["timing"]["seconds"]
        one, many = list(sec)
        d = row["difference"]
        rss = row["peak_rss_bytes"]
        lines.append(
            f"| {row['model']} | {row['ranks']} | {row['timing']['rounds']} | {sec[one]['median']:.1f} "
            f"[{sec[one]['min']:.1f}-{sec[one]['max']:.1f}] | {sec[many]['median']:.1f} [{sec[many]['min']:.1f}-"
            f"{sec[many]['max']:.1f}] | {row['speedup']['median']:.2f}x | {rss[one] / 2**20:.0f} / "
            f"{rss[many] / 2**20:.0f} | {d.get('choices', '-')} | {d.get('max_relative_difference', float('nan')):.1e} "
            f"({_pair(d.get('worst_values'))}) | {d.get('median_relative_difference', float('nan')):.1e} | "
            f"{_num(d.get('max_difference_over_stderr'))} | {d.get('sizes_equal', False)} | {d.get('same_dp_plan', '-')} |")
    loads = [f"- {r['model']}: load avg {r['timing']['load']['load_before']} -> {r['timing']['load']['load_after']}"
             for r in data["rows"]]
    return "\n".join(lines + [""] + loads) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits-cnn", "mnist1d-resnet"])
    parser.add_argument("--ranks", type=int, default=2, help="torchrun ranks (and the one process's threads)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extract-args", nargs=argparse.REMAINDER, default=[],
                        help="passed to cetopt extract after the model (e.g. --bits 2,4,8)")
    parser.add_argument("--part", default="zoo", help="results go to torchrun-<part>.{json,md}")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.ranks < 2 or args.rounds < 1:
        parser.error("--ranks must be >= 2 and --rounds >= 1")
    rows = []
    for model in args.models:
        rows.append(bench_model(model, args))
        print(f"done {model}", file=sys.stderr)
    data = {"meta": {"benchmark": "torchrun", "python": platform.python_version(), "machine": platform.machine(),
                     "cpus": os.cpu_count(),
                     "command": "python benchmarks/torchrun.py " + " ".join(sys.argv[1:] if argv is None else argv)},
            "rows": rows}
    stem = args.out_dir / f"torchrun-{args.part}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    text = report(data)
    atomic_write_text(stem.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

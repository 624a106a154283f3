"""Solver speed at the goal's shape (8 choices per layer) and at 32, every comparison interleaved.

For each (layers, choices) cell the backends are timed in the same rounds (cetopt.bench.timing), three
ways side by side: ``solver`` (SolveResult.seconds, the backend alone), ``call`` (one whole
``cetopt.solve()`` call: option checks, problem compilation, the backend, re-evaluation) and ``process``
(``cetopt solve FILE --solver X --format json`` in a fresh subprocess: interpreter start, imports, loading
and validating the file, the call, printing; timed per cell for ``--process-backends``, for every backend
in the wall check). The baseline is HAWQ-V3's integer program (ILP.ipynb) in PuLP + CBC, model building
included, timed per call in the same rounds. Every thing, PuLP and the CLI included, is warmed up alike by
one untimed call on a 10-layer problem before the first cell. Ratios vs PuLP are per round (PuLP call /
backend call). Peak memory: tracemalloc over one extra untimed solve() call (Python and NumPy
allocations; the MIP solvers allocate in C, where it cannot see) and the kernel's ru_maxrss of each CLI
process. The wall check runs every backend's CLI with ``--time-limit 3`` on 10,000 x 8. ``--processes N``
times each cell in N fresh processes, one after another, each warmed up alike, and pools their rounds: the
machine's speed drifts between processes (cetopt.bench.timing), and one process's median carries that drift.

Bounded for a shared 2-core machine: MIP/relaxation backends up to ``--mip-max-layers`` (1,000), PuLP
up to ``--pulp-max-layers`` (1,000; at 10,000 x 8 one CBC call took 157 s under load 10 there), dp and
greedy at every size; 100,000 layers at 8 choices only.

    python benchmarks/solvers.py --run 1          # writes benchmarks/results/solvers-all-run1.{json,txt}
    python benchmarks/solvers.py --quick --run q  # 100 layers only
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

from cetopt import AllocationProblem, solve
from cetopt._atomic import atomic_write_text
from cetopt.bench.timing import Adaptive, ProcessRun, Summary, compare, merge, run_process
from cetopt.problem.io import save_problem
from cetopt.problem.synthetic import synthetic_problem

sys.path.insert(0, str(Path(__file__).parent))
from reports import format_solvers  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BACKENDS = ["dp", "greedy", "highs", "ortools", "ortools-mip", "cvxpy"]
FAST = ["dp", "greedy"]  # the only backends run at 100,000 layers
PULP = "pulp-cbc"
MIN_BLOCK = 0.25  # seconds: cheap calls are repeated back to back within a round (cetopt.bench.timing)


def pulp_hawq_baseline(problem: AllocationProblem, time_limit: float) -> dict[str, Any]:
    """HAWQ-V3's ILP with PuLP + CBC: binary x[layer, choice], sum_c x = 1, sum size x <= limit."""
    import warnings

    import pulp

    start = time.perf_counter()
    model = pulp.LpProblem("hawq_v3", pulp.LpMinimize)
    with warnings.catch_warnings():  # HAWQ-V3's notebook builds LpVariable directly (deprecated in PuLP 3)
        warnings.simplefilter("ignore", DeprecationWarning)
        x = {(i, j): pulp.LpVariable(f"x_{i}_{j}", cat=pulp.LpBinary)
             for i, layer in enumerate(problem.layers) for j in range(len(layer.choices))}
    model += pulp.lpSum(layer.choices[j].loss * x[i, j] for i, layer in enumerate(problem.layers)
                        for j in range(len(layer.choices)))
    for i, layer in enumerate(problem.layers):
        model += pulp.lpSum(x[i, j] for j in range(len(layer.choices))) == 1
    model += pulp.lpSum(layer.size_bits(layer.choices[j]) * x[i, j] for i, layer in enumerate(problem.layers)
                        for j in range(len(layer.choices))) <= problem.max_size_bits
    status = model.solve(pulp.PULP_CBC_CMD(msg=0, timeLimit=time_limit, threads=1))
    seconds = time.perf_counter() - start
    objective = pulp.value(model.objective)
    return {"solver": PULP, "status": pulp.LpStatus[status].lower(),
            "objective": float(objective) if objective is not None else None, "seconds": seconds}


def make_problem(layers: int, choices: int, seed: int, avg_bits: float) -> AllocationProblem:
    """The synthetic benchmark problem: 8 choices are bit-widths 1..8, 32 choices bit-widths 1..32."""
    pool = tuple(range(1, max(choices, 8) + 1))
    return synthetic_problem(layers, n_choices=choices, seed=seed, avg_bits=avg_bits, bits_pool=pool)


def cli(path: Path, backend: str, time_limit: float) -> list[str]:
    """The ``cetopt solve`` command line (the venv's console script, next to this interpreter)."""
    script = Path(sys.executable).with_name("cetopt")
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing; install cetopt (pip install -e .) into this environment")
    return [str(script), "solve", str(path), "--solver", backend, "--format", "json",
            "--time-limit", str(time_limit)]


def plan_cell(layers: int, args: argparse.Namespace) -> tuple[list[str], bool, int]:
    """Which backends, whether PuLP runs, and how many rounds for a cell of ``layers``."""
    backends = [b for b in args.backends if layers <= args.mip_max_layers or b in FAST]
    if layers > 10_000:
        backends = [b for b in backends if b in FAST]
    baseline = not args.no_baseline and layers <= args.pulp_max_layers
    rounds = args.rounds if layers <= 100 else args.rounds_large
    return backends, baseline, rounds


def time_cell(layers: int, choices: int, args: argparse.Namespace, tmp: Path | None = None) -> dict[str, Any]:
    """Interleaved call, process and PuLP timings of one (layers, choices) cell in this process: the
    Comparison, every timed call's return value by name, and the problem's name and file size. ``tmp`` None:
    a fresh worker process, which makes its own directory and warms up like the parent would."""
    if tmp is None:
        with tempfile.TemporaryDirectory(prefix="cetopt-bench-") as name:
            warm_up(args, Path(name))
            return time_cell(layers, choices, args, Path(name))
    problem = make_problem(layers, choices, args.seed, args.avg_bits)
    path = save_problem(problem, tmp / f"{problem.name}.json")
    backends, baseline, rounds = plan_cell(layers, args)
    results: dict[str, list[Any]] = {}
    things: dict[str, Callable[[], Any]] = {}
    for b in backends:
        things[f"{b} call"] = (lambda b=b: lambda: guarded(solve, problem, b, time_limit=args.time_limit))()
        if b in args.process_backends:
            things[f"{b} process"] = (lambda b=b: lambda: run_process(cli(path, b, args.time_limit), check=False))()
    if baseline:
        things[PULP] = lambda: pulp_hawq_baseline(problem, args.pulp_time_limit)
    # above 10,000 layers an extra untimed call (tracemalloc, calibration) costs more than it tells
    traced = layers <= 10_000
    memory = [f"{b} call" for b in backends if b in args.memory_backends and traced] + ([PULP] if baseline else [])
    cheap = [f"{b} call" for b in backends if (b in FAST and traced) or layers <= 100] + ([PULP] if layers <= 100 else [])
    timing = compare(things, rounds=rounds, warmup=0, memory=memory if args.memory else False,
                     adaptive=Adaptive(min_block=MIN_BLOCK, calibrate=cheap),
                     after_call=lambda name, value: results.setdefault(name, []).append(value))
    return {"timing": timing, "results": results, "problem": problem.name, "file_bytes": path.stat().st_size}


def run_cell(layers: int, choices: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One cell's rows: timed here (``--processes 1``) or in ``--processes`` fresh worker processes one after
    another, their rounds pooled (cetopt.bench.timing.merge), each process's median kept beside them."""
    if args.processes == 1:
        parts = [time_cell(layers, choices, args, tmp)]
    else:
        import solvers  # this file as a module: a spawned worker finds time_cell by module name, not as __main__

        parts = []
        for _ in range(args.processes):  # one at a time: workers side by side would time each other
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                parts.append(pool.submit(solvers.time_cell, layers, choices, args).result())
    timing = merge([p["timing"] for p in parts])
    results: dict[str, list[Any]] = {}
    for part in parts:
        for name, values in part["results"].items():
            results.setdefault(name, []).extend(values)
    backends, baseline, _ = plan_cell(layers, args)
    rows = [backend_row(b, timing, results, baseline) for b in backends]
    if baseline:
        rows.append(pulp_row(timing, results[PULP]))
    mark_excess(rows)
    return {"layers": layers, "choices": choices, "problem": parts[0]["problem"], "file_bytes": parts[0]["file_bytes"],
            "time_limit": args.time_limit, "timing": timing.to_dict(), "rows": rows}


def guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or the exception it raised (a failing backend is reported, not fatal)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - reported in the results as the row's status
        return err


def process_output(run: ProcessRun) -> dict[str, Any]:
    """The CLI's JSON result, or an error status with its exit code and stderr tail."""
    try:
        return json.loads(run.stdout)
    except ValueError:
        return {"status": f"error (exit {run.returncode}): {run.stderr.strip()[-200:]}", "seconds": None}


def backend_row(b: str, timing: Any, results: dict[str, list[Any]], baseline: bool) -> dict[str, Any]:
    solved = results[f"{b} call"]
    runs: list[ProcessRun] = results.get(f"{b} process", [])
    failed = [r for r in solved if isinstance(r, Exception)]
    if failed:
        return {"solver": b, "status": f"error: {type(failed[0]).__name__}: {failed[0]}"[:300], "limit": None,
                "objective": None, "gap": None, "solver_s": None, "call_s": None, "process_s": None}
    last = solved[-1]
    row = {"solver": b, "status": last.status.value, "limit": last.limit, "objective": last.objective,
           "gap": last.gap, "solver_s": vars(Summary.of([r.seconds for r in solved])),
           "call_s": vars(timing.seconds[f"{b} call"]), "process_s": None, "outside_solver_in_process": None,
           "peak_call_bytes": timing.peak_bytes.get(f"{b} call"), "peak_process_rss_bytes": None}
    if runs:
        outs = [process_output(p) for p in runs]
        inside = [o["seconds"] / p.seconds for o, p in zip(outs, runs) if o.get("seconds") is not None]
        row.update(process_s=vars(timing.seconds[f"{b} process"]),
                   outside_solver_in_process=vars(Summary.of([1 - x for x in inside])) if inside else None,
                   peak_process_rss_bytes=max(p.max_rss_bytes for p in runs),
                   process_status=sorted({o["status"] for o in outs}))
    if baseline:
        row["pulp_over_call"] = vars(timing.ratio(PULP, f"{b} call"))
    return row


def pulp_row(timing: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"solver": PULP, "status": runs[-1]["status"], "limit": None, "objective": runs[-1]["objective"],
            "gap": None, "solver_s": None, "call_s": vars(timing.seconds[PULP]), "process_s": None,
            "peak_call_bytes": timing.peak_bytes.get(PULP), "peak_process_rss_bytes": None}


def mark_excess(rows: list[dict[str, Any]]) -> None:
    """Each row's objective relative to the best proved optimum (or the best objective found)."""
    proved = [r["objective"] for r in rows if r["status"] == "optimal" and r["objective"] is not None]
    found = [r["objective"] for r in rows if r["objective"] is not None]
    best = min(proved) if proved else (min(found) if found else None)
    for r in rows:
        ok = best is not None and r["objective"] is not None
        r["excess_vs_best"] = (r["objective"] - best) / abs(best) if ok and best else None


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def wall_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Every backend's CLI on 10,000 x 8 with ``--time-limit 3``: its wall time, interleaved rounds."""
    problem = make_problem(10_000, 8, args.seed, args.avg_bits)
    path = save_problem(problem, tmp / "wall-check.json")
    runs: dict[str, list[ProcessRun]] = {}
    timing = compare({b: (lambda b=b: lambda: run_process(cli(path, b, 3.0), check=False))() for b in args.backends},
                     rounds=args.wall_rounds, warmup=0,
                     after_call=lambda name, value: runs.setdefault(name, []).append(value))
    rows = []
    for b in args.backends:
        out = [process_output(r) for r in runs[b]]
        rows.append({"solver": b, "process_s": vars(timing.seconds[b]), "status": sorted({o["status"] for o in out}),
                     "limit": sorted({str(o.get("limit")) for o in out}), "solver_s": [o["seconds"] for o in out],
                     "gap": [o.get("gap") for o in out], "peak_process_rss_bytes": max(r.max_rss_bytes for r in runs[b])})
    return {"layers": 10_000, "choices": 8, "time_limit": 3.0, "timing": timing.to_dict(), "rows": rows}


def warm_up(args: argparse.Namespace, tmp: Path) -> None:
    """Imports and first calls of every backend, PuLP and the CLI, on a 10-layer problem, outside the clock."""
    small = make_problem(10, 8, 0, args.avg_bits)
    path = save_problem(small, tmp / "warm.json")
    for b in args.backends:
        solve(small, b)
        run_process(cli(path, b, args.time_limit))
    if not args.no_baseline:
        pulp_hawq_baseline(small, args.time_limit)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--choices", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--avg-bits", type=float, default=3.5)
    parser.add_argument("--time-limit", type=float, default=10.0, help="per cetopt solve, seconds")
    parser.add_argument("--pulp-time-limit", type=float, default=120.0, help="PuLP/CBC's limit, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds up to 100 layers")
    parser.add_argument("--rounds-large", type=int, default=2, help="timed rounds above 100 layers")
    parser.add_argument("--wall-rounds", type=int, default=1, help="rounds of the --time-limit 3 check")
    parser.add_argument("--mip-max-layers", type=int, default=1000,
                        help="MIP/relaxation backends run up to this size (dp and greedy at every size)")
    parser.add_argument("--pulp-max-layers", type=int, default=1000)
    parser.add_argument("--max-choices-large", type=int, default=8, help="choices above 10,000 layers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=BACKENDS)
    parser.add_argument("--process-backends", nargs="+", default=FAST,
                        help="backends whose CLI process is timed in every cell (all of them in the wall check)")
    parser.add_argument("--memory-backends", nargs="+", default=FAST,
                        help="backends traced by tracemalloc (the MIP solvers allocate in C, invisible to it)")
    parser.add_argument("--processes", type=int, default=1,
                        help="time each cell in this many fresh processes, one after another, and pool their rounds "
                             "(a shared machine drifts between processes; see cetopt.bench.timing)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--no-wall-check", dest="wall_check", action="store_false")
    parser.add_argument("--quick", action="store_true", help="100 layers only, no wall check")
    parser.add_argument("--part", default="all", help="results go to solvers-<part>-run<run>.json")
    parser.add_argument("--run", default="1", help="run label")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.wall_check = [100], False
    if args.processes < 1:
        parser.error(f"--processes must be >= 1, got {args.processes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    meta = {"benchmark": "solvers", "part": args.part, "run": args.run, "python": platform.python_version(),
            "machine": platform.machine(), "avg_bits": args.avg_bits, "seed": args.seed,
            "time_limit": args.time_limit, "generator": "cetopt.problem.synthetic.synthetic_problem",
            "command": "python benchmarks/solvers.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    data: dict[str, Any] = {"meta": meta, "cells": [], "wall_check": None, "complete": False}
    stem = args.out_dir / f"solvers-{args.part}-run{args.run}"
    with tempfile.TemporaryDirectory(prefix="cetopt-bench-") as name:
        tmp = Path(name)
        if args.processes == 1:  # workers warm themselves up
            warm_up(args, tmp)
        for layers in args.sizes:
            for choices in args.choices:
                if layers > 10_000 and choices > args.max_choices_large:
                    continue
                data["cells"].append(run_cell(layers, choices, args, tmp))
                write(stem, data)  # each finished cell is kept, even if a later one is stopped
                print(f"done {layers} x {choices}", file=sys.stderr)
        data["wall_check"] = wall_check(args, tmp) if args.wall_check else None
    data["complete"] = True
    print(write(stem, data))
    print(f"wrote {stem}.json and .txt", file=sys.stderr)
    return 0


def write(stem: Path, data: dict[str, Any]) -> str:
    """Write the results JSON and its text table atomically; returns the table."""
    atomic_write_text(stem.with_suffix(".json"), json.dumps(finite(data), indent=1, allow_nan=False) + "\n")
    report = format_solvers(data)
    atomic_write_text(stem.with_suffix(".txt"), report + "\n")
    return report


if __name__ == "__main__":
    sys.exit(main())

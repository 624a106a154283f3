"""Solve time and quality of every backend from 10 to 10,000 layers, against a PuLP/CBC baseline.

The baseline is the integer program as HAWQ-V3 formulates it (ILP.ipynb): PuLP binary variables per
(layer, bit-width), one-hot rows, a size row, solved by CBC; timed in the same process on the same
problems, model building included (as for cetopt, whose time includes compiling the problem).

    python benchmarks/solvers.py                       # 10, 100, 1000, 10000 layers x 7 choices
    python benchmarks/solvers.py --sizes 10 100 --out benchmarks/results/solvers-small.json

Prints a markdown table (time ratio = PuLP time / backend time; objective relative to the best proved
optimum) and writes every row to a JSON file atomically.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from cetopt import AllocationProblem, solve
from cetopt._atomic import atomic_write_text
from cetopt.problem.synthetic import synthetic_problem
from cetopt.tables import format_table

BACKENDS = ["dp", "greedy", "highs", "ortools", "ortools-mip", "cvxpy"]


def pulp_hawq_baseline(problem: AllocationProblem, time_limit: float) -> dict[str, Any]:
    """HAWQ-V3's ILP with PuLP + CBC: binary x[layer, choice], sum_c x = 1, sum size x <= limit."""
    import pulp

    start = time.perf_counter()
    model = pulp.LpProblem("hawq_v3", pulp.LpMinimize)
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
    return {"solver": "pulp-cbc (HAWQ-V3 ILP)", "status": pulp.LpStatus[status].lower(),
            "objective": float(objective) if objective is not None else None, "seconds": seconds, "gap": None}


def run_cell(problem: AllocationProblem, backend: str, time_limit: float) -> dict[str, Any]:
    start = time.perf_counter()
    result = solve(problem, backend, time_limit=time_limit)
    wall = time.perf_counter() - start
    return {"solver": backend, "status": result.status.value + (f" ({result.limit})" if result.limit else ""),
            "objective": result.objective, "bound": result.bound, "gap": result.gap, "seconds": wall,
            "backend_seconds": result.seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--choices", type=int, default=7)
    parser.add_argument("--avg-bits", type=float, default=3.5)
    parser.add_argument("--time-limit", type=float, default=60.0, help="per solve, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=BACKENDS)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "solvers.json")
    args = parser.parse_args(argv)

    warm = synthetic_problem(5, seed=0)
    for backend in args.backends:  # imports and first-call costs stay out of the timings
        solve(warm, backend)
    rows: list[dict[str, Any]] = []
    table = []
    for n in args.sizes:
        problem = synthetic_problem(n, n_choices=args.choices, seed=args.seed, avg_bits=args.avg_bits)
        cells = [run_cell(problem, b, args.time_limit) for b in args.backends]
        baseline = None if args.no_baseline else pulp_hawq_baseline(problem, args.time_limit)
        proved = [c["objective"] for c in cells if c["status"] == "optimal"]
        best = min(proved) if proved else min(c["objective"] for c in cells if c["objective"] is not None)
        for cell in cells + ([baseline] if baseline else []):
            cell.update(layers=n, choices=args.choices)
            ratio = baseline["seconds"] / cell["seconds"] if baseline else None
            excess = (cell["objective"] - best) / abs(best) if cell["objective"] is not None else None
            cell.update(speedup_vs_pulp=ratio, excess_vs_best=excess)
            rows.append(cell)
            backend = cell.get("backend_seconds")
            table.append([n, cell["solver"], cell["status"], f"{cell['seconds']:.4f}",
                          "-" if backend is None else f"{backend:.4f}",
                          "-" if ratio is None else f"{ratio:.1f}x",
                          "-" if cell["objective"] is None else f"{cell['objective']:.10g}",
                          "-" if excess is None else f"{excess:.1e}",
                          "-" if cell.get("gap") is None else f"{cell['gap']:.1e}"])
        print(f"done {n} layers", file=sys.stderr)
    print(format_table(["layers", "solver", "status", "seconds", "backend s", "speedup vs PuLP", "objective",
                        "excess vs best", "certified gap"], table))
    meta = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
            "choices": args.choices, "avg_bits": args.avg_bits, "seed": args.seed, "time_limit": args.time_limit}
    atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

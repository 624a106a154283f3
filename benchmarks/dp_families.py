"""Is dp's speed the solver's or the generator's? The whole `cetopt solve FILE --solver dp` process on N layers
x 8 choices from four instance generators, interleaved within each round (issue 30: on a held-out generator dp
took ~30x longer than on `make-problem synthetic`):

- ``synthetic``: cetopt.problem.synthetic.synthetic_problem (what `cetopt make-problem synthetic` writes);
- ``few-sizes``: three layer sizes only (4,096 / 65,536 / 589,824 weights), sensitivities log-normal with
  sigma 4 (a spread of e^8 between typical layers), 8 bit-widths drawn from 1..16, the 4^-b loss law with
  +-20% noise, budget at the mean candidate width;
- ``heavy-tail``: log-normal layer sizes (sigma 2), sensitivities log-normal (sigma 2), bits {2,3,4,5,6,8,12,16};
- ``coprime-sizes``: few-sizes with sizes 4,093 / 65,537 / 589,823 (no common factor: the adversarial case
  for dp, whose common-step tightening then cannot help; run under ``--time-limit``).

Per (generator, seed) the problem is written in the column form (what ``make-problem --columnar`` writes) and
solved by a fresh ``cetopt solve FILE --solver dp --format json`` process: its wall seconds (start to exit),
its peak resident memory (ru_maxrss, measured by a small launcher that forks it), dp's own seconds (SolveResult.seconds), status,
gap, rounds and peak frontier. A second fresh process times loading the file (``load_problem``) in the column
form and, for the first seed, the list form. ``--million`` adds one 10^6 x 8 run (few-sizes) for peak memory.
Writes ``benchmarks/results/dp-families.{json,md}``::

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/dp_families.py --layers 100000 --seeds 0,1 --million
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cetopt.problem.columns import LayerColumns  # noqa: E402
from cetopt.problem.model import AllocationProblem, Budget  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
COPRIME_LIMIT_S = 30.0  # --time-limit for the adversarial generator (its exact proof takes minutes)


def _problem(name: str, sizes: np.ndarray, sensitivity: np.ndarray, bits: np.ndarray,
             rng: np.random.Generator) -> AllocationProblem:
    """Losses sensitivity x size x 4^-bits x U(0.8, 1.2), every layer the same bit-widths; built as columns."""
    n, k = len(sizes), len(bits)
    noise = rng.uniform(0.8, 1.2, size=(n, k))  # the same stream as one draw of k per layer
    loss = (sensitivity * sizes)[:, None] * 4.0 ** (-bits.astype(np.float64))[None, :] * noise
    columns = LayerColumns([f"l{i}" for i in range(n)], sizes.astype(np.int64), np.arange(n + 1, dtype=np.int64) * k,
                           np.tile(bits.astype(np.int64), n), loss.ravel())
    return AllocationProblem(name=name, layers=columns, budget=Budget(avg_bits=float(bits.mean())))  # type: ignore


def few_sizes(n: int, seed: int, sizes: tuple[int, ...] = (4096, 65536, 589824),
              name: str = "few-sizes") -> AllocationProblem:
    rng = np.random.default_rng(seed)
    bits = np.sort(rng.choice(np.arange(1, 17), size=8, replace=False))
    return _problem(name, rng.choice(list(sizes), size=n), np.exp(rng.normal(0, 4, size=n)), bits, rng)


def coprime_sizes(n: int, seed: int) -> AllocationProblem:
    return few_sizes(n, seed, (4093, 65537, 589823), "coprime-sizes")


def heavy_tail(n: int, seed: int) -> AllocationProblem:
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, np.exp(rng.normal(9, 2, size=n))).astype(np.int64)
    return _problem("heavy-tail", sizes, np.exp(rng.normal(0, 2, size=n)), np.array([2, 3, 4, 5, 6, 8, 12, 16]), rng)


def synthetic(n: int, seed: int) -> AllocationProblem:
    from cetopt.problem.synthetic import synthetic_problem

    problem = synthetic_problem(n, n_choices=8, seed=seed)
    columns = LayerColumns.from_layers(problem.layers)
    return problem.with_changes(layers=columns)


GENERATORS: dict[str, Callable[[int, int], AllocationProblem]] = {
    "synthetic": synthetic, "few-sizes": few_sizes, "heavy-tail": heavy_tail, "coprime-sizes": coprime_sizes}

LOAD_SCRIPT = """
import sys, time
from cetopt.problem.io import load_problem
out = []
for path in sys.argv[1:]:
    start = time.perf_counter()
    load_problem(path)
    out.append(time.perf_counter() - start)
print(" ".join(map(repr, out)))
"""


CHILD_TIMEOUT_S = 300.0
# A child's ru_maxrss starts from the RSS of the process that forked it (Linux keeps the high-water mark
# across fork and exec), and this script holds a 10^5-10^6-layer problem: so a small launcher process forks
# the measured one and reports its wall seconds and peak RSS (KiB) on stderr.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"{time.perf_counter() - start} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _child(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one fresh process, as its launcher measured them; a process that
    fails or runs past CHILD_TIMEOUT_S raises RuntimeError."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, env=env,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{argv[3:6]} ran past {CHILD_TIMEOUT_S:g} s") from None
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if done.returncode not in (0, 1) or len(last.split()) != 2:
        raise RuntimeError(f"{argv[3:6]} exited {done.returncode}: {done.stderr[-300:]}")
    wall, rss_kib = (float(v) for v in last.split())
    return wall, rss_kib / 1024, done.stdout


def measure(problem: AllocationProblem, folder: Path, *, row_form: bool, time_limit: float | None) -> dict[str, Any]:
    from cetopt.problem.io import save_problem

    col = save_problem(problem, folder / "problem.col.json", columnar=True)
    paths = [str(col)]
    if row_form:
        paths.append(str(save_problem(problem, folder / "problem.json")))
    argv = [sys.executable, "-m", "cetopt", "solve", str(col), "--solver", "dp", "--format", "json"]
    if time_limit is not None:
        argv += ["--time-limit", str(time_limit)]
    wall, rss, text = _child(argv)
    result = json.loads(text)
    _, _, loads = _child([sys.executable, "-c", LOAD_SCRIPT, *paths])
    load = [float(v) for v in loads.split()]
    extra = result.get("extra", {})
    return {"process_seconds": wall, "peak_rss_mib": rss, "solve_seconds": result["seconds"],
            "status": result["status"], "gap": result["gap"], "limit": result["limit"],
            "rounds": extra.get("rounds"), "peak_states": extra.get("peak_states"),
            "free_groups": extra.get("free_groups"), "objective": result["objective"],
            "load_columns_seconds": load[0], "load_rows_seconds": load[1] if row_form else None,
            "file_mib": col.stat().st_size / 2**20, "time_limit": time_limit}


def _median(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def _range(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def report(data: dict[str, Any], command: str) -> str:
    rows = data["rows"]
    lines = [f"# dp on {data['layers']:,} layers x 8 choices: the whole `cetopt solve --solver dp` process",
             "",
             f"Generated by `{command}` ({len(data['seeds'])} seeds, generators interleaved per seed, each solve a "
             f"fresh process; 1-minute load average {data['load_average']:.1f} on {data['cpus']} CPUs at the end). "
             "process = wall seconds of `cetopt solve FILE --solver dp --format json` from start to exit (reading "
             "the column-form file, compiling, solving, scoring and printing the 100,000-entry result); solve = "
             "dp's own seconds (SolveResult.seconds); peak RSS = that process's ru_maxrss; load = `load_problem` "
             "alone in a fresh process, column form (list form: first seed). Ranges are min-max over seeds.", "",
             "| generator | status | process s | solve s | peak RSS MiB | load s (columns) | load s (list) | "
             "rounds | peak states | free groups |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in GENERATORS:
        mine = [r for r in rows if r["generator"] == name]
        if not mine:
            continue
        limit = f" (--time-limit {mine[0]['time_limit']:g})" if mine[0]["time_limit"] else ""
        statuses = ", ".join(sorted({r["status"] + (f" gap {r['gap']:.1e}" if r["gap"] else "") for r in mine}))
        lines.append(f"| {name}{limit} | {statuses} | {_range(mine, 'process_seconds')} | "
                     f"{_range(mine, 'solve_seconds')} | {_range(mine, 'peak_rss_mib')} | "
                     f"{_range(mine, 'load_columns_seconds')} | {_range(mine, 'load_rows_seconds')} | "
                     f"{', '.join(str(r['rounds']) for r in mine)} | "
                     f"{', '.join(str(r['peak_states']) for r in mine)} | "
                     f"{', '.join(str(r['free_groups']) for r in mine)} |")
    for row in data.get("million", []):
        if "failed" in row:
            lines += ["", f"10^6 x 8 ({row['generator']}, seed {row['seed']}): failed: {row['failed']}"]
            continue
        lines += ["", f"10^6 x 8 ({row['generator']}, seed {row['seed']}): {row['status']}, process "
                  f"{row['process_seconds']:.1f} s, solve {row['solve_seconds']:.2f} s, peak RSS "
                  f"{row['peak_rss_mib']:.0f} MiB, file {row['file_mib']:.0f} MiB loaded in "
                  f"{row['load_columns_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from cetopt._atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--layers", type=int, default=100_000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--million", action="store_true", help="add one 10^6 x 8 few-sizes run (peak memory)")
    parser.add_argument("--out", type=Path, default=OUT / "dp-families")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    million: list[dict[str, Any]] = []
    command = "python benchmarks/dp_families.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def write() -> None:  # after every row: a run stopped by the shared lock's timeout keeps what it measured
        data = {"layers": args.layers, "choices": 8, "seeds": seeds, "rows": rows, "million": million,
                "load_average": os.getloadavg()[0], "cpus": os.cpu_count(), "command": command}
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), report(data, command))

    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:  # one round per seed: every generator in it, interleaved
            for name, make in GENERATORS.items():
                problem = make(args.layers, seed)
                limit = COPRIME_LIMIT_S if name == "coprime-sizes" else None
                row = {"generator": name, "seed": seed, "layers": args.layers,
                       **measure(problem, Path(tmp), row_form=seed == seeds[0] and limit is None, time_limit=limit)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                write()
        if args.million:
            problem = few_sizes(10 * args.layers, seeds[0])
            row = {"generator": "few-sizes", "seed": seeds[0], "layers": 10 * args.layers}
            try:
                row.update(measure(problem, Path(tmp), row_form=False, time_limit=None))
            except RuntimeError as err:  # recorded, not hidden: the 2 GB claim then fails in the report
                row["failed"] = str(err)
            million.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            write()
    print(f"wrote {args.out}.json, {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

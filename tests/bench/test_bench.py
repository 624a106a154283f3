"""The bench runner: the row schema, resuming without reruns or duplicates (also after a SIGKILL of a
running `cetopt bench`), parallel jobs, and every plot written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cetopt.bench.cell import Cell
from cetopt.bench.runner import BenchSpec, run_bench
from cetopt.bench.store import COLUMNS, key_for, read_cell
from cetopt.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = BenchSpec(problems=[str(ROOT / "problems/synthetic/synthetic-50x6-s0.json"),
                            str(ROOT / "problems/hawq-v3/resnet18-size0.5.json")],
                  solvers=[str(ROOT / "solvers/dp.toml"), "greedy"], budgets=[3.0, 4.0, 6.0], baselines=["uniform"],
                  measure=False)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rows_follow_the_schema_and_plots_are_written(tmp_path: Path) -> None:
    result = run_bench(SMALL, tmp_path, show_progress=False)
    assert result.ran == 2 * 3 * 3 and result.reused == 0
    rows = read_rows(tmp_path / "results.csv")
    assert tuple(rows[0]) == COLUMNS and len(rows) == 18
    for row in rows:
        assert row["status"] in ("optimal", "feasible", "infeasible", "skipped")
        versions = json.loads(row["versions"])
        assert versions["cetopt"] and versions["numpy"]
        if row["kind"] == "solver":
            assert float(row["seconds"]) >= 0 and row["options"].startswith("{")
            if row["status"] == "optimal":
                assert float(row["avg_bits"]) <= float(row["budget_avg_bits"]) + 1e-9
                assert len(json.loads(row["bits"])) == int(row["layers"])
    dp = {(r["problem"], r["budget_avg_bits"]): float(r["objective"]) for r in rows if r["solver"] == "dp" and r["objective"]}
    greedy = {(r["problem"], r["budget_avg_bits"]): float(r["objective"]) for r in rows if r["solver"] == "greedy" and r["objective"]}
    assert all(greedy[k] >= dp[k] - 1e-9 * max(1, abs(dp[k])) for k in dp)
    for name in ("solve_time", "bits_along_depth", "predicted_vs_measured"):
        for fmt in ("png", "svg"):
            assert (tmp_path / f"{name}.{fmt}").stat().st_size > 1000
    assert "## Solvers" in (tmp_path / "summary.md").read_text()


def test_resume_reruns_nothing_and_adds_only_missing_cells(tmp_path: Path) -> None:
    run_bench(SMALL, tmp_path, show_progress=False, plots=False)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    again = run_bench(SMALL, tmp_path, show_progress=False, plots=False)
    assert again.ran == 0 and again.reused == 18
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()} == stamp
    # a damaged cell file is rerun, not trusted
    victim = next(iter(stamp))
    victim.write_text("{half a row")
    wider = BenchSpec(**{**SMALL.__dict__, "budgets": [3.0, 4.0, 6.0, 5.0]})
    result = run_bench(wider, tmp_path, show_progress=False, plots=False)
    assert result.ran == 6 + 1 and result.reused == 24 - 7
    rows = read_rows(tmp_path / "results.csv")
    keys = [(r["problem"], r["solver"], r["budget_avg_bits"]) for r in rows]
    assert len(keys) == len(set(keys)) == 24


def test_parallel_jobs_give_the_same_rows(tmp_path: Path) -> None:
    serial = run_bench(SMALL, tmp_path / "a", show_progress=False, plots=False)
    parallel = run_bench(SMALL, tmp_path / "b", jobs=2, show_progress=False, plots=False)
    strip = ("seconds", "wall_seconds", "message", "bound", "gap", "options")
    assert [{k: v for k, v in r.items() if k not in strip} for r in serial.rows] == \
        [{k: v for k, v in r.items() if k not in strip} for r in parallel.rows]


def test_a_killed_run_resumes_without_duplicates_or_lost_rows(tmp_path: Path) -> None:
    budgets = ",".join(f"{2.6 + 0.1 * i:.1f}" for i in range(36))
    command = [sys.executable, "-m", "cetopt.cli", "bench", "--problems",
               str(ROOT / "problems/synthetic/synthetic-50x6-s0.json"), "--solvers", str(ROOT / "solvers/ortools.toml"),
               "--budgets", budgets, "--baselines", "", "--no-measure", "--no-plots", "--out", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            start_new_session=True)
    cells = tmp_path / "cells"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cells.glob("*.json")) if cells.exists() else []) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(cells.glob("*.json")))
    assert 3 <= done < 36, f"the run was not killed mid-way ({done} of 36 cells)"
    assert main(["bench", "--problems", str(ROOT / "problems/synthetic/synthetic-50x6-s0.json"), "--solvers",
                 str(ROOT / "solvers/ortools.toml"), "--budgets", budgets, "--baselines", "", "--no-measure",
                 "--no-plots", "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "results.csv")
    assert len(rows) == 36 and len({r["budget_avg_bits"] for r in rows}) == 36
    for i in range(36):
        cell = Cell(problem=str(ROOT / "problems/synthetic/synthetic-50x6-s0.json"),
                    solver=str(ROOT / "solvers/ortools.toml"), budget_avg_bits=round(2.6 + 0.1 * i, 1), measure=False)
        assert read_cell(tmp_path, key_for(cell)) is not None


def test_bad_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--problems", "nope/*.json", "--out", str(tmp_path)]) == 2
    assert "problems" in capsys.readouterr().err
    assert main(["bench", "--budgets", "3,x", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--baselines", "magic", "--out", str(tmp_path)]) == 2

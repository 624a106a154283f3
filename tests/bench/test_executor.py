"""cetopt bench's executors: the spec parser, clear errors, and a Dask LocalCluster giving the same rows as
the in-process run, with resume across executors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cetopt.bench.executor import open_executor, parse_executor
from cetopt.bench.runner import BenchSpec, run_bench
from cetopt.cli import main
from cetopt.errors import ProblemError

ROOT = Path(__file__).resolve().parents[2]
SMALL = BenchSpec(problems=[str(ROOT / "problems/synthetic/synthetic-50x6-s0.json")],
                  solvers=[str(ROOT / "solvers/dp.toml"), "greedy"], budgets=[3.0, 4.0], baselines=["uniform"],
                  measure=False)
STRIP = ("seconds", "wall_seconds", "message", "bound", "gap", "options")


def _rows(result) -> list[dict]:  # type: ignore[no-untyped-def]
    return [{k: v for k, v in r.items() if k not in STRIP} for r in result.rows]


def test_parse_executor_accepts_local_and_dask_and_names_the_field_otherwise() -> None:
    assert parse_executor(None) == ("local", None)
    assert parse_executor("local") == ("local", None)
    assert parse_executor("dask://10.0.0.1:8786") == ("dask", "tcp://10.0.0.1:8786")
    for bad in ("ray://x:1", "dask://nohost", "dask://:8786", "dask://h:port"):
        with pytest.raises(ProblemError) as err:
            parse_executor(bad)
        assert err.value.field == "--executor"


def test_no_scheduler_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    with pytest.raises(ProblemError, match="no Dask scheduler answered"):
        with open_executor("dask://127.0.0.1:9", timeout=2):
            pass


def test_dask_local_cluster_gives_the_same_rows_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    serial = run_bench(SMALL, tmp_path / "a", show_progress=False, plots=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_port=0) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        dask = run_bench(SMALL, tmp_path / "b", show_progress=False, plots=False, executor=address)
        assert dask.ran == len(serial.rows) and _rows(dask) == _rows(serial)
        cells = sorted((tmp_path / "b" / "cells").iterdir())
        assert len(cells) == len(serial.rows)
        cells[0].unlink()  # a lost cell: the next run redoes it alone, on the cluster, through the CLI
        stamps = {p: p.stat().st_mtime_ns for p in cells[1:]}
        assert main(["bench", "--problems", *SMALL.problems, "--solvers", *SMALL.solvers, "--budgets", "3,4",
                     "--baselines", "uniform", "--no-measure", "--no-plots", "--out", str(tmp_path / "b"),
                     "--executor", address]) == 0
        assert {p: p.stat().st_mtime_ns for p in cells[1:]} == stamps and cells[0].exists()
    assert _rows(run_bench(SMALL, tmp_path / "b", show_progress=False, plots=False)) == _rows(serial)

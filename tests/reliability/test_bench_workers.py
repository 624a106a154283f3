"""The bench's workers: a worker killed mid-run is a clear message and the run resumes where it stopped;
local workers exit when the bench process is killed; a Dask scheduler without workers is reported after
the timeout instead of waiting in silence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cetopt.bench.runner as runner
from cetopt.bench.runner import BenchSpec, BenchWorkerLost, run_bench
from cetopt.errors import ProblemError

ROOT = Path(__file__).resolve().parents[2]
SMALL = BenchSpec(problems=[str(ROOT / "problems/synthetic/synthetic-50x6-s0.json")], solvers=["greedy", "dp"],
                  budgets=[3.0, 4.0, 5.0], baselines=[], measure=False)


def test_a_killed_worker_is_a_clear_message_and_the_run_resumes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = runner.run_cell

    def dies_on_dp_at_4(cell):  # type: ignore[no-untyped-def]
        if cell.solver == "dp" and cell.budget_avg_bits == 4.0:
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
        return real(cell)

    monkeypatch.setattr(runner, "run_cell", dies_on_dp_at_4)  # the forked workers inherit it
    with pytest.raises(BenchWorkerLost, match="run the same command again to resume") as err:
        run_bench(SMALL, tmp_path, jobs=2, show_progress=False, plots=False)
    assert "BrokenProcessPool" in str(err.value)
    saved = len(list((tmp_path / "cells").iterdir()))
    assert 0 <= saved < len(SMALL.cells())
    monkeypatch.setattr(runner, "run_cell", real)
    resumed = run_bench(SMALL, tmp_path, jobs=2, show_progress=False, plots=False)
    assert resumed.ran == len(SMALL.cells()) - saved and resumed.reused == saved
    assert len(resumed.rows) == len(SMALL.cells())


def test_a_killed_bench_process_is_a_clean_exit(tmp_path: Path) -> None:
    """cetopt bench exits 3 with the message, not a BrokenProcessPool traceback."""
    script = ("import os, signal, sys\nimport cetopt.bench.runner as r\nreal = r.run_cell\n"
              "def dying(cell):\n    if cell.solver == 'dp':\n        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(cell)\nr.run_cell = dying\nfrom cetopt.cli import main\n"
              f"sys.exit(main(['bench', '--problems', {SMALL.problems[0]!r}, '--solvers', 'greedy', 'dp', "
              f"'--budgets', '3', '--baselines', '', '--no-measure', '--no-plots', '--jobs', '2', '--out', "
              f"{str(tmp_path / 'out')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 3, done.stderr[-2000:]
    assert "resume" in done.stderr and "Traceback" not in done.stderr


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the worker processes")
def test_workers_exit_when_the_bench_is_killed(tmp_path: Path) -> None:
    script = ("import time\nimport cetopt.bench.runner as r\nr.run_cell = lambda cell: time.sleep(600)\n"
              "from cetopt.bench.runner import BenchSpec, run_bench\n"
              f"spec = BenchSpec(problems=[{SMALL.problems[0]!r}], solvers=['greedy', 'dp'], budgets=[3.0, 4.0], "
              "baselines=[], measure=False)\n"
              f"run_bench(spec, {str(tmp_path)!r}, jobs=2, show_progress=False, plots=False)\n")
    bench = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [p for p in _children(bench.pid) if _alive(p)]
        assert len(workers) >= 2, "the bench never started its workers"
    finally:
        bench.kill()
        bench.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "workers outlived the killed bench"


def test_a_scheduler_without_workers_is_reported() -> None:
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from cetopt.bench.executor import open_executor

    with LocalCluster(n_workers=0, processes=True, dashboard_address=None, scheduler_port=0,
                      host="127.0.0.1") as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        start = time.monotonic()
        with pytest.raises(ProblemError, match="has no worker after 2 s") as err:
            with open_executor(address, timeout=2):
                pass
        assert err.value.field == "--executor" and time.monotonic() - start < 30

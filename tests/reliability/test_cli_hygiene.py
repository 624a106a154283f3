"""Bad inputs end in exit 2 with a message (never a traceback, never a hang); results own stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cetopt.cli import main

ROOT = Path(__file__).resolve().parents[2]
HAWQ = str(ROOT / "problems/hawq-v3/resnet18-size0.5.json")


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cetopt", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, input=stdin)


@pytest.mark.parametrize("argv, needle", [
    (["solve", "/dev/zero"], "not a regular file"),
    (["solve", HAWQ, "--solver-config", "/dev/zero"], "not a regular file"),
    (["solve", "/tmp"], "folder"),
    (["solve", HAWQ, "--out", "/tmp"], "--out"),
    (["solve", HAWQ, "--out", "/dev/null"], "not a regular file"),
    (["solve", HAWQ, "-o", "workers=0", "--solver", "ortools"], "workers"),
    (["solve", HAWQ, "--solver", "ortools", "-o", "resolution_bits=-4"], "resolution_bits"),
    (["solve", HAWQ, "--solver", "ortools-mip", "-o", "engine=GUROBI"], "engine"),
])
def test_bad_inputs_exit_2_with_a_message(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert time.perf_counter() - start < 60  # refused, not read until memory runs out


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    assert main(["solve", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--layers", "-5"], ["--layers", "9" * 5000], ["--seed", "-1"],
                                   ["--seed", str(2**40)], ["--avg-bits", "nan"], ["--choices", "9"]])
def test_bad_numbers_are_refused_by_the_parser(flags: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["make-problem", "synthetic", "--out", str(tmp_path / "x.json"), *flags])
    assert stop.value.code == 2


def test_nan_literals_and_toml_engines_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "nan.json"
    bad.write_text('{"format": "cetopt.problem/1", "name": "x", "layers": [{"name": "a", "params": 10, '
                   '"choices": [{"bits": 4, "loss": NaN}, {"bits": 8, "loss": 0}]}], "budget": {"avg_bits": 6}}')
    assert main(["solve", str(bad)]) == 2
    assert "layers[0].choices[0].loss" in capsys.readouterr().err
    config = tmp_path / "g.toml"
    config.write_text('backend = "ortools-mip"\n[options]\nengine = "GUROBI"\n')
    assert main(["solve", HAWQ, "--solver-config", str(config)]) == 2
    config.write_text('backend = "dp"\ntime_limit = nan\n')
    assert main(["solve", HAWQ, "--solver-config", str(config)]) == 2
    assert "time_limit" in capsys.readouterr().err


def test_a_closed_pipe_exits_2_with_a_message() -> None:
    command = f"{sys.executable} -m cetopt solve {HAWQ} --format json | head -c 1 > /dev/null"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr  # 0 when the whole object fit in the pipe before head exited


@pytest.mark.parametrize("solver", ["highs", "ortools-mip", "cvxpy", "ortools"])
def test_solver_libraries_never_write_to_stdout(solver: str) -> None:
    proc = cli("solve", HAWQ, "--solver", solver, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["solver"] == solver  # exactly one JSON object, nothing else


def test_the_default_solver_is_dp_where_it_applies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", HAWQ, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["solver"] == "dp"

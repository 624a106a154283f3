"""Every JSON/TOML input (problem, plan, manifest, solver config) goes through one bounded reader
(cetopt.inputs): a FIFO, /dev/zero, a sparse or over-cap file, an over-long integer, deep nesting and a
duplicate key each end in exit 2 with the field named, never a hang, a MemoryError or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cetopt.cli import main
from cetopt.errors import ProblemError
from cetopt.inputs import check_tree, parse_json, parse_toml, read_regular_file
from cetopt.problem.io import dumps_problem, parse_problem_json, save_problem
from cetopt.problem.synthetic import synthetic_problem
from cetopt.quant.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = json.loads(dumps_problem(synthetic_problem(3, n_choices=3, seed=0)))
PLAN = Plan(bits={"0": 4, "4": 3}, model="digits-mlp").to_dict()


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command line in a subprocess with a deadline: a hang is a failure, not a stuck test run."""
    return subprocess.run([sys.executable, "-m", "cetopt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def kinds(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    """Input kind -> (the path that command reads, the command)."""
    (tmp_path / "art").mkdir(exist_ok=True)
    save_problem(synthetic_problem(3, n_choices=3, seed=0), tmp_path / "ok.json")
    return {"problem": (tmp_path / "in.json", ["solve", "in.json"]),
            "plan": (tmp_path / "in.json", ["apply", "in.json", "--model", "digits-mlp", "--out", "o"]),
            "manifest": (tmp_path / "art" / "manifest.json", ["evaluate", "art", "--model", "digits-mlp"]),
            "config": (tmp_path / "in.toml", ["solve", "ok.json", "--solver-config", "in.toml"])}


@pytest.mark.parametrize("kind", ["problem", "plan", "manifest", "config"])
def test_a_fifo_and_a_device_are_refused_at_once(tmp_path: Path, kind: str) -> None:
    path, command = kinds(tmp_path)[kind]
    os.mkfifo(path)
    done = cli(command, tmp_path)
    assert done.returncode == 2 and "not a regular file" in done.stderr and "Traceback" not in done.stderr
    path.unlink()
    path.symlink_to("/dev/zero")
    done = cli(command, tmp_path)
    assert done.returncode == 2 and "not a regular file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["problem", "plan", "manifest", "config"])
def test_sparse_and_over_cap_files_are_refused_by_size(tmp_path: Path, kind: str,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path, command = kinds(tmp_path)[kind]
    monkeypatch.chdir(tmp_path)
    with open(path, "wb") as handle:  # 3 GiB of holes: refused by its size before a byte is read
        handle.truncate(3 * 1024**3)
    assert main(command) == 2
    assert "limit" in capsys.readouterr().err
    path.write_text(json.dumps(PROBLEM) if kind != "config" else 'backend = "dp"\n')
    monkeypatch.setenv("CETOPT_MAX_INPUT_BYTES", "64")  # the cap is configurable
    assert main(command) == 2
    assert "CETOPT_MAX_INPUT_BYTES" in capsys.readouterr().err


HOSTILE_JSON = {
    "duplicate key": ('{"format": "cetopt.problem/1", "name": "a", "name": "b", "layers": []}', "name"),
    "duplicate nested": ('{"format": "cetopt.problem/1", "name": "a", "layers": [{"name": "x", "params": 1, '
                         '"choices": [{"bits": 2, "loss": 0.0, "bits": 8}]}]}', "layers[0].choices[0].bits"),
    "huge integer": ('{"format": "cetopt.problem/1", "name": "a", "layers": [{"name": "x", "params": '
                     + "9" * 5000 + ', "choices": [{"bits": 2, "loss": 0.0}]}]}', "layers[0].params"),
    "deep metadata": ('{"format": "cetopt.problem/1", "name": "a", "layers": [{"name": "x", "params": 1, '
                      '"choices": [{"bits": 2, "loss": 0.0}]}], "budget": {"avg_bits": 4}, "metadata": {"m": ' + "[" * 200 + "]" * 200 + "}}",
                      "metadata.m"),
    "very deep": ("[" * 100_000 + "]" * 100_000, None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_hostile_json_is_refused_with_the_field_named(case: str) -> None:
    text, field = HOSTILE_JSON[case]
    with pytest.raises(ProblemError) as err:
        parse_problem_json(text, "p.json")
    assert "p.json" in str(err.value)
    if field is not None:
        assert err.value.field is not None and err.value.field.startswith(field), err.value


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_hostile_json_exits_2_from_every_json_command(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for kind, (path, command) in kinds(tmp_path).items():
        if kind == "config":
            continue
        path.write_text(HOSTILE_JSON[case][0])
        assert main(command) == 2, kind
        err = capsys.readouterr().err
        assert str(path.name) in err, (kind, err)


def test_plans_refuse_duplicates_nan_and_deep_extra() -> None:
    base = json.dumps(PLAN)
    with pytest.raises(ProblemError, match="twice") as err:
        Plan.from_json(base[:-1] + ', "model": "other"}', "plan.json")
    assert err.value.field == "model"
    with pytest.raises(ProblemError, match="NaN") as err:
        Plan.from_json(json.dumps({**PLAN, "extra": {"loss": float("nan")}}), "plan.json")
    assert err.value.field == "extra.loss"
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ProblemError, match="levels deep"):
        Plan.from_json(json.dumps({**PLAN, "extra": {"deep": deep}}), "plan.json")


def test_toml_refuses_huge_integers_and_duplicates() -> None:
    with pytest.raises(ProblemError, match="c.toml"):
        parse_toml(b'backend = "dp"\nseed = ' + b"9" * 5000 + b"\n", "c.toml")
    with pytest.raises(ProblemError, match="not valid TOML"):
        parse_toml(b'backend = "dp"\nbackend = "highs"\n', "c.toml")
    with pytest.raises(ProblemError, match="levels deep"):
        parse_toml(b"x = " + b"[" * 80 + b"]" * 80 + b"\n", "c.toml")


def test_option_values_over_the_digit_limit_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    save_problem(synthetic_problem(3, n_choices=3, seed=0), tmp_path / "p.json")
    assert main(["solve", str(tmp_path / "p.json"), "-o", "x=" + "9" * 5000]) == 2
    assert "--option" in capsys.readouterr().err


def test_the_reader_itself() -> None:
    with pytest.raises(ProblemError, match="not a regular file"):
        read_regular_file("/dev/zero", 10, "plan")
    with pytest.raises(ProblemError, match="folder"):
        read_regular_file("/", 10, "plan")
    assert parse_json('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    with pytest.raises(ProblemError, match="digits"):
        parse_json('{"a": ' + "1" * 50 + "}", max_int_digits=20)
    check_tree({"a": [[[1]]]}, "", max_depth=4)
    with pytest.raises(ProblemError) as err:
        check_tree({"a": [[[1]]]}, "x", max_depth=2)
    assert err.value.field == "x.a[0][0]"


def test_a_fifo_among_prove_checkpoints_is_recomputed_not_waited_on(tmp_path: Path) -> None:
    from cetopt.theory.checkpoint import ProveCheckpoints

    checkpoints = ProveCheckpoints(tmp_path, {"model": "m", "k": 16})
    checkpoints.folder.mkdir(parents=True)
    os.mkfifo(checkpoints.folder / "table3.json")
    import threading

    answer: list[object] = []
    reader = threading.Thread(target=lambda: answer.append(checkpoints.table_rows(3)), daemon=True)
    reader.start()
    reader.join(timeout=20)  # open() of a FIFO blocks until a writer comes: that was a hang
    assert not reader.is_alive() and answer == [None]

"""The command line's exit codes follow the vocabulary of docs/cli.md ("Vocabulary and exit codes"): 0 success,
1 infeasible or no solution, 2 bad input (problem, model, option, config; a plan or problem made on other weights
too), 3 a computation failed, 130 interrupted. Every error class cetopt defines is placed in that vocabulary
here, so a new one cannot reach the user with an exit code nobody chose."""

from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from cetopt.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = str(ROOT / "problems" / "digits" / "digits-mlp-cet-avg3.json")

# docs/cli.md's table, as data
VOCABULARY = {0: "success", 1: "infeasible or no solution", 2: "bad input", 3: "a computation failed",
              130: "interrupted"}

# every error class in cetopt/ -> its exit code
EXIT_OF = {
    "ProblemError": 2, "SolverOptionError": 2, "SolverUnavailableError": 2, "UnsupportedProblemError": 2,
    "FingerprintMismatchError": 2,  # a plan or problem made on other weights is bad input, not a failure
    "CurvatureError": 3, "CacheError": 3, "ShippedWeightsError": 3, "BenchWorkerLost": 3, "SectionError": 3,
}


@lru_cache(maxsize=1)
def _error_classes() -> dict[str, str]:
    """Class name -> module, for every class in cetopt/ deriving (by name, transitively) from CetoptError."""
    bases: dict[str, tuple[str, list[str]]] = {}
    for path in (ROOT / "cetopt").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = (module, [b.id for b in node.bases if isinstance(b, ast.Name)])
    found: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, (module, parents) in bases.items():
            if name not in found and any(p == "CetoptError" or p in found for p in parents):
                found[name] = module
                changed = True
    return found


def test_the_documented_vocabulary_is_this_one() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|$", text, flags=re.M))
    assert sorted(int(code) for code in table) == sorted(VOCABULARY)
    for code, meaning in VOCABULARY.items():
        assert table[str(code)].startswith(meaning), (code, table[str(code)])


def test_every_error_class_has_an_exit_code() -> None:
    assert sorted(_error_classes()) == sorted(EXIT_OF)


@pytest.mark.parametrize("name", sorted(EXIT_OF))
def test_each_error_class_maps_to_its_code(name: str, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    import cetopt.cli.output as output

    cls = getattr(importlib.import_module(_error_classes()[name]), name)
    error = cls.__new__(cls)
    Exception.__init__(error, f"a {name}")

    def fail(args: object, func: object) -> int:
        raise error

    monkeypatch.setattr(output, "run", fail)
    assert main(["solve", PROBLEM]) == EXIT_OF[name]
    assert f"a {name}" in capsys.readouterr().err


def test_ctrl_c_is_130(monkeypatch: pytest.MonkeyPatch) -> None:
    import cetopt.cli.output as output

    def interrupted(args: object, func: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "run", interrupted)
    assert main(["solve", PROBLEM]) == 130


def test_real_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", PROBLEM, "--solver", "greedy"]) == 0
    assert main(["solve", str(tmp_path / "nosuch.json")]) == 2                       # a file that is not there
    assert main(["solve", PROBLEM, "--solver", "nosuch"]) == 2                       # an unknown option value
    assert main(["solve", PROBLEM, "--solver", "greedy", "--avg-bits", "1"]) == 1    # below every plan
    capsys.readouterr()
    # a backend that ends with status "error" (it could not run its computation) is exit 3, not "infeasible"
    assert main(["solve", PROBLEM, "--solver", "bruteforce", "-o", "max_combinations=10", "--format", "json"]) == 3
    assert json.loads(capsys.readouterr().out)["status"] == "error"


def test_a_plan_of_other_weights_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from cetopt.quant.plan import Plan

    tests = str(Path(__file__).resolve().parent)
    sys.path.insert(0, tests)
    try:
        from test_artifact import signed, small_spec
    finally:
        sys.path.remove(tests)
    (tmp_path / "m.py").write_text(f"import sys\nsys.path.insert(0, {tests!r})\nfrom test_artifact import small_spec\n"
                                   "def spec():\n    return small_spec(0)\ndef other():\n    return small_spec(1)\n")
    monkeypatch.chdir(tmp_path)
    plan = signed(Plan(bits={"0": 4, "4": 3}), small_spec())   # fingerprints of seed 0's weights
    Plan(layers=plan.layers, model="m.py:spec", extra=plan.extra).save(tmp_path / "plan.json")
    assert main(["apply", "plan.json", "--model", "m.py:other", "--allow-model-mismatch", "--out", "art"]) == 2
    assert "fingerprint" in capsys.readouterr().err and not (tmp_path / "art").exists()
    assert main(["apply", "plan.json", "--model", "m.py:spec", "--out", "art"]) == 0


def test_an_unexpected_exception_is_a_failed_computation_not_infeasible(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import cetopt.cli.output as output

    def out_of_memory(args: object, func: object) -> int:
        raise MemoryError("cannot allocate 9 GB")

    monkeypatch.setattr(output, "run", out_of_memory)
    with pytest.raises(MemoryError):  # the library call lets it through, with its traceback
        main(["solve", PROBLEM])
    from cetopt.cli import entry

    assert entry(["solve", PROBLEM]) == 3  # the command ends it as a failed computation
    err = capsys.readouterr().err
    assert "MemoryError: cannot allocate 9 GB" in err and "--verbose" in err and "Traceback" not in err


def test_compare_reports_its_worst_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a backend that failed makes the comparison exit 3 (not 1); every backend fine is 0
    starved = tmp_path / "starved.toml"
    starved.write_text('backend = "bruteforce"\n\n[options]\nmax_combinations = 10\n')
    assert main(["compare", PROBLEM, "--solvers", "greedy,dp"]) == 0
    assert main(["compare", PROBLEM, "--solvers", f"greedy,{starved}"]) == 3
    capsys.readouterr()

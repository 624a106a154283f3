"""Fuzzing the file loaders and the CLI: malformed and adversarial problem and plan files (wrong types,
NaN/inf, negative sizes, duplicate names, huge numbers, deep nesting, wrong format versions, unknown keys,
truncated or binary text) must end in a clear CetoptError (exit code 2 from the CLI) or a valid result,
never in another exception. The number of cases is hypothesis' max_examples per property (60 in CI;
HYPOTHESIS_PROFILE=fuzz runs 5,000 per property)."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cetopt.cli import main
from cetopt.errors import CetoptError
from cetopt.problem.io import parse_problem_json, problem_to_dict
from cetopt.problem.model import AllocationProblem, Budget, Choice, Interaction, Layer
from cetopt.quant.plan import Plan
from cetopt.solvers.api import solve

SEED_PROBLEM = AllocationProblem(
    name="seed", budget=Budget(avg_bits=4.0, bops=1e9),
    layers=tuple(Layer(name=f"l{i}", params=100 * (i + 1), macs=1000 * (i + 1), shape=(10, 10 * (i + 1)),
                       choices=tuple(Choice(bits=b, loss=0.1 * (8 - b) * (i + 1)) for b in (2, 4, 8)))
                 for i in range(4)),
    ties=(("l1", "l2"),),
    interactions=(Interaction(a="l0", b="l3", loss=((0.0, 0.1, 0.2), (0.1, 0.0, 0.1), (0.2, 0.1, 0.0))),),
)
SEED = problem_to_dict(SEED_PROBLEM)
SEED_COLUMNS = problem_to_dict(AllocationProblem(  # the column form of the layers (cetopt.problem.columns)
    name="columns", budget=Budget(avg_bits=4.0, bops=1e9),
    layers=tuple(Layer(name=f"l{i}", params=100 * (i + 1), macs=1000 * (i + 1),
                       choices=tuple(Choice(bits=b, loss=0.1 * (8 - b) * (i + 1)) for b in (2, 4, 8)))
                 for i in range(4)),
    ties=(("l1", "l2"),),
    interactions=(Interaction(a="l0", b="l3", loss=((0.0, 0.1, 0.2), (0.1, 0.0, 0.1), (0.2, 0.1, 0.0))),),
), columnar=True)
SEED_PLAN = Plan(bits={"l0": 4, "l1": 8}, model="m").to_dict()

NASTY_VALUES = [None, True, False, 0, -1, -1e300, 1e308, 10 ** 400, math.nan, math.inf, -math.inf, "", "x" * 5000,
                "8", [], {}, [1, 2], {"a": 1}, 2 ** 63, -(2 ** 63), 0.5, 1e-320]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 40:  # inside a deeply nested mutation: nothing more to mutate there
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


@st.composite
def mutated(draw: st.DrawFn, seed: dict) -> str:
    data = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "duplicate", "nest", "unknown", "format", "negate"]))
        if not path:
            if op == "format" and isinstance(data, dict):
                data["format"] = draw(st.sampled_from(["cetopt.problem/2", "cetopt.problem/0", "", 1, None]))
            elif op == "replace":
                data = copy.deepcopy(draw(st.sampled_from(NASTY_VALUES)))
            continue
        parent, key = _get(data, path[:-1]), path[-1]
        if op == "replace":
            parent[key] = copy.deepcopy(draw(st.sampled_from(NASTY_VALUES)))
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif op == "nest":
            value = parent[key]
            for _ in range(draw(st.sampled_from([1, 3, 60, 300]))):
                value = [value]
            parent[key] = value
        elif op == "unknown" and isinstance(parent, dict):
            parent[f"unknown_{key}"] = 1
        elif op == "negate" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = -parent[key] if parent[key] else -1
    text = json.dumps(data, allow_nan=True) if not _too_deep(data) else "[" * 5000 + "]" * 5000
    cut = draw(st.sampled_from([None, None, None, "truncate", "binary"]))
    if cut == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif cut == "binary":
        text = text[:10] + "\x00\xff\ufffe" + text[10:]
    return text


def _too_deep(data: Any, depth: int = 0) -> bool:
    if depth > 250:
        return True
    if isinstance(data, dict):
        return any(_too_deep(v, depth + 1) for v in data.values())
    if isinstance(data, list):
        return any(_too_deep(v, depth + 1) for v in data)
    return False


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
                deadline=None)


@FUZZ
@given(mutated(SEED))
def test_problem_loader_never_crashes(text: str) -> None:
    try:
        problem = parse_problem_json(text)
    except CetoptError as err:
        assert str(err)  # a message, naming what is wrong
        return
    try:
        result = solve(problem, "greedy")
    except CetoptError:
        return
    assert result.status.value in ("optimal", "feasible", "infeasible", "no_solution", "error")


@FUZZ
@given(mutated(SEED_COLUMNS))
def test_column_form_loader_never_crashes(text: str) -> None:
    try:
        problem = parse_problem_json(text)
    except CetoptError as err:
        assert str(err)
        return
    for name in ("greedy", "dp"):
        try:
            result = solve(problem, name)
        except CetoptError:
            continue
        assert result.status.value in ("optimal", "feasible", "infeasible", "no_solution", "error")


@FUZZ
@given(mutated(SEED_PLAN))
def test_plan_loader_never_crashes(text: str) -> None:
    try:
        plan = Plan.from_json(text)
    except CetoptError as err:
        assert str(err)
        return
    assert all(isinstance(b, int) for b in plan.bits.values())


@settings(max_examples=max(40, settings.default.max_examples // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(mutated(SEED))
def test_cli_answers_with_an_exit_code_never_a_traceback(tmp_path_factory, text: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("fuzz") / "problem.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for argv in (["validate", str(path)], ["solve", str(path), "--solver", "greedy", "--format", "json"]):
        assert main(argv) in (0, 1, 2)


def test_unreadable_plan_and_problem_files_are_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{not json")
    for load in (Plan.load,):
        try:
            load(bad)
        except CetoptError as err:
            assert "bad.json" in str(err) or "JSON" in str(err)
        else:
            raise AssertionError("a garbage plan file loaded")
    assert main(["validate", str(bad)]) == 2
    assert main(["validate", str(tmp_path / "missing.json")]) == 2


def test_coverage_guided_fuzzing_with_atheris_when_it_installs(tmp_path, root) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    import shutil
    import subprocess
    import sys

    if importlib.util.find_spec("atheris") is None:
        import pytest

        pytest.skip("atheris is optional: pip install atheris (a manylinux wheel exists for CPython 3.11)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in (root / "problems" / "digits").glob("*.json"):
        shutil.copy(path, corpus)
    run = subprocess.run([sys.executable, str(root / "tests/reliability/atheris_fuzz.py"), "-runs=20000", str(corpus)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Done 20000 runs" in run.stderr

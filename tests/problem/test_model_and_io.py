"""The problem model and the cetopt.problem/1 file format: validation names fields; files round-trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given

from cetopt import AllocationProblem, Budget, Choice, Layer, ProblemError, evaluate, load_problem, save_problem
from cetopt.problem.io import dumps_problem, parse_problem_json, problem_from_dict, problem_to_dict
from cetopt.problem.schema import PROBLEM_SCHEMA
from strategies import problems

MINIMAL = {"format": "cetopt.problem/1", "name": "tiny",
           "layers": [{"name": "conv1", "params": 864,
                       "choices": [{"bits": 2, "loss": 0.31}, {"bits": 4, "loss": 0.02}, {"bits": 8, "loss": 0.0}]}],
           "budget": {"avg_bits": 4.0}}


def test_minimal_form_from_the_issue_loads_and_scores() -> None:
    problem = problem_from_dict(MINIMAL)
    assert problem.total_params == 864
    assert problem.max_size_bits == 4.0 * 864
    score = evaluate(problem, {"conv1": 1})
    assert score.size_bits == 864 * 4 and score.objective == pytest.approx(0.02) and score.feasible
    assert not evaluate(problem, {"conv1": 2}).feasible


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["layers"][0]["choices"][1].update(bits=0), "layers[0].choices[1].bits"),
    (lambda d: d["layers"][0]["choices"][1].update(loss="x"), "layers[0].choices[1].loss"),
    (lambda d: d["layers"][0].update(params=-3), "layers[0].params"),
    (lambda d: d["layers"][0].update(choices=[]), "layers[0].choices"),
    (lambda d: d["layers"][0].update(colour="red"), "layers[0]"),
    (lambda d: d.update(format="cetopt.problem/2"), "format"),
    (lambda d: d["budget"].update(avg_bits=-1), "budget.avg_bits"),
    (lambda d: d["layers"].append(dict(d["layers"][0])), "layers[1].name"),
    (lambda d: d.update(ties=[["conv1", "nope"]]), "ties[0][1]"),
    (lambda d: d["layers"][0]["choices"].append({"bits": 4, "loss": 1.0}), "layers[0].choices[3]"),
    (lambda d: d["layers"][0].update(fixed_bits=3), "layers[0].fixed_bits"),
    (lambda d: d.update(budget={}), "budget"),
])
def test_errors_name_the_offending_field(mutate, field: str) -> None:
    data = json.loads(json.dumps(MINIMAL))
    mutate(data)
    with pytest.raises(ProblemError) as err:
        problem_from_dict(data)
    assert err.value.field == field, str(err.value)


def test_nan_and_garbage_json_are_refused_cleanly() -> None:
    with pytest.raises(ProblemError, match="NaN"):
        parse_problem_json(json.dumps(MINIMAL).replace("0.31", "NaN"))
    with pytest.raises(ProblemError, match="not valid JSON"):
        parse_problem_json("{")
    with pytest.raises(ProblemError, match="nested too deeply"):
        parse_problem_json("[" * 100000 + "]" * 100000)
    with pytest.raises(ProblemError, match="cannot read"):
        load_problem("/nonexistent/problem.json")


@given(problems())
def test_round_trip_is_lossless_and_byte_stable(problem: AllocationProblem) -> None:
    text = dumps_problem(problem)
    again = parse_problem_json(text)
    assert dumps_problem(again) == text
    assert again.layers == problem.layers and again.budget == problem.budget
    assert again.interactions == problem.interactions and again.ties == problem.ties
    jsonschema.validate(json.loads(text), PROBLEM_SCHEMA)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    problem = problem_from_dict(MINIMAL)
    target = tmp_path / "p.json"
    save_problem(problem, target)
    assert load_problem(target) == problem
    assert os.listdir(tmp_path) == ["p.json"]


def test_low_rank_and_series_choices_size_themselves() -> None:
    layer = Layer("fc", 600, (Choice(8, 0.0), Choice(8, 0.1, rank=4), Choice(4, 0.05, terms=2)), shape=(20, 30))
    assert layer.size_bits(layer.choices[0]) == 600 * 8
    assert layer.size_bits(layer.choices[1]) == 4 * (20 + 30) * 8
    assert layer.size_bits(layer.choices[2]) == 600 * 4 * 2
    assert [c.label for c in layer.choices] == ["8b", "r4@8b", "2x4b"]
    with pytest.raises(ProblemError, match="shape"):
        Layer("fc", 600, (Choice(8, 0.0, rank=4),))


def test_budget_forms_agree() -> None:
    layers = (Layer("a", 100, (Choice(4, 1.0), Choice(8, 0.0))),)
    for budget in (Budget(avg_bits=4), Budget(size_bits=400), Budget(size_bytes=50), Budget(ratio=8)):
        assert AllocationProblem("p", layers, budget).max_size_bits == 400


def test_shipped_problems_validate_against_the_schema(root: Path) -> None:
    files = sorted((root / "problems").rglob("*.json"))
    assert files, "problems/ should ship at least one problem file"
    for path in files:
        data = json.loads(path.read_text())
        jsonschema.validate(data, PROBLEM_SCHEMA)
        problem = load_problem(path)
        assert problem_to_dict(problem)["layers"] == data["layers"]

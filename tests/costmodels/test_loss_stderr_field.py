"""The optional per-choice ``loss_stderr`` field: validated, saved only when set, read back, schema-valid."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from cetopt.errors import ProblemError
from cetopt.problem.io import dumps_problem as problem_to_json, parse_problem_json as problem_from_json
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer
from cetopt.problem.schema import PROBLEM_SCHEMA


def _problem(stderrs: list[float | None]) -> AllocationProblem:
    choices = tuple(Choice(bits=b, loss=1.0 / b, loss_stderr=s) for b, s in zip((2, 4, 8), stderrs))
    return AllocationProblem(name="p", layers=(Layer(name="fc", params=10, choices=choices),), budget=Budget(avg_bits=4))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)), min_size=3, max_size=3))
def test_round_trip_keeps_loss_stderr(stderrs: list[float | None]) -> None:
    problem = _problem(stderrs)
    text = problem_to_json(problem)
    data = json.loads(text)
    jsonschema.validate(data, PROBLEM_SCHEMA)
    written = [c.get("loss_stderr") for c in data["layers"][0]["choices"]]
    assert written == stderrs  # absent exactly where unknown
    back = problem_from_json(text)
    assert [c.loss_stderr for c in back.layers[0].choices] == stderrs


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_loss_stderr_names_the_field(bad: object) -> None:
    with pytest.raises(ProblemError) as info:
        Choice(bits=4, loss=0.1, loss_stderr=bad)  # type: ignore[arg-type]
    assert "loss_stderr" in str(info.value)


def test_schema_rejects_negative_stderr() -> None:
    data = json.loads(problem_to_json(_problem([0.1, None, None])))
    data["layers"][0]["choices"][0]["loss_stderr"] = -0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, PROBLEM_SCHEMA)

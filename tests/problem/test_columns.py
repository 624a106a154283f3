"""The column form of a problem's layers (cetopt.problem.columns): the same problem as the row form, by every
measure a solver or report reads, and the same refusals with the field named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.problem.compiled import compile_problem
from cetopt.problem.evaluate import evaluate
from cetopt.problem.io import dumps_problem, parse_problem_json
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer
from cetopt.solvers.api import solve


@st.composite
def plain_problems(draw: st.DrawFn) -> AllocationProblem:
    """1..8 plain layers (name, params, optional macs, choices of bits and loss), any budget form."""
    n = draw(st.integers(1, 8))
    with_macs = draw(st.booleans())
    layers = []
    for i in range(n):
        bits = draw(st.lists(st.integers(1, 16), min_size=1, max_size=5, unique=True))
        number = st.one_of(st.just(0.0), st.floats(1e-9, 1e6), st.floats(-1e3, -1e-9))  # compile's range
        losses = draw(st.lists(number, min_size=len(bits), max_size=len(bits)))
        params = draw(st.integers(1, 10**7))
        layers.append(Layer(name=f"layer.{i}", params=params, macs=params * 9 if with_macs else None,
                            choices=tuple(Choice(bits=b, loss=v) for b, v in zip(bits, losses))))
    avg = draw(st.floats(1.0, 16.0))
    budget = Budget(avg_bits=avg, bops=draw(st.floats(1.0, 1e12)) if with_macs and draw(st.booleans()) else None)
    return AllocationProblem("plain", tuple(layers), budget)


@settings(max_examples=60, deadline=None)
@given(plain_problems(), st.data())
def test_columns_read_as_the_same_problem(problem: AllocationProblem, data: st.DataObject) -> None:
    rows = parse_problem_json(dumps_problem(problem))
    cols = parse_problem_json(dumps_problem(problem, columnar=True))
    assert cols.columns is not None and rows.columns is None
    assert tuple(cols.layers) == tuple(rows.layers) == problem.layers
    assert cols.layers == rows.layers  # the sequence compares equal to the tuple
    assert cols.total_params == rows.total_params and cols.layer_names == rows.layer_names
    a, b = compile_problem(rows), compile_problem(cols)
    for key in ("loss", "size"):
        assert np.array_equal(a.padded(key, np.inf), b.padded(key, np.inf))
    assert (a.max_size, a.max_bops, a.loss_unit) == (b.max_size, b.max_bops, b.loss_unit)
    assert len(a.groups) == len(b.groups) and np.array_equal(a.option_counts, b.option_counts)
    for ga, gb in zip(a.groups, b.groups):  # GroupColumns builds the same groups on demand
        assert ga.members == gb.members and np.array_equal(ga.options, gb.options)
        assert np.array_equal(ga.loss, gb.loss) and np.array_equal(ga.size, gb.size)
        assert (ga.bops is None) == (gb.bops is None)
    option = np.array([data.draw(st.integers(0, g.n_options - 1)) for g in a.groups])
    assert a.to_choices(option) == b.to_choices(option)
    assert a.objective_values(option) == b.objective_values(option)
    pick = {layer.name: data.draw(st.integers(0, len(layer.choices) - 1)) for layer in problem.layers}
    ea, eb = evaluate(rows, pick), evaluate(cols, pick)
    assert math.isclose(ea.loss, eb.loss, rel_tol=1e-12, abs_tol=1e-9) and ea.size_bits == eb.size_bits
    assert ea.bops == eb.bops and ea.violations == eb.violations
    solver = "greedy" if problem.budget.bops is not None else "dp"  # dp holds one resource budget
    ra, rb = solve(rows, solver), solve(cols, solver)
    assert ra.status is rb.status and ra.choices == rb.choices and ra.bits == rb.bits


def _columns(**change: object) -> str:
    layers = {"name": ["a", "b"], "params": [10, 20], "bits": [[2, 8], [4, 8]], "loss": [[1.0, 0.0], [0.5, 0.1]]}
    layers.update(change)  # type: ignore[arg-type]
    layers = {k: v for k, v in layers.items() if v is not None}
    return json.dumps({"format": "cetopt.problem/1", "name": "t", "budget": {"avg_bits": 6}, "layers": layers})


@pytest.mark.parametrize("change, field, words", [
    ({"bits": [[2, 2], [4, 8]]}, "layers.bits[0][1]", "duplicate choice 2b"),
    ({"bits": [[2, 99], [4, 8]]}, "layers.bits[0][1]", "<= 64"),
    ({"bits": [[2, True], [4, 8]]}, "layers.bits[0][1]", "expected an integer"),
    ({"bits": [[2, 8], []], "loss": [[1.0, 0.0], []]}, "layers.bits[1]", "at least one choice"),
    ({"loss": [[1.0, 0.0], [0.5]]}, "layers.loss[1]", "1 losses for 2 bit-widths"),
    ({"loss": [[1.0, "x"], [0.5, 0.1]]}, "layers.loss[0][1]", "expected a number"),
    ({"loss": [[1.0, 10**400], [0.5, 0.1]]}, "layers.loss[0][1]", "digits"),
    ({"params": [10, 0]}, "layers.params[1]", ">= 1"),
    ({"params": [10, 2.5]}, "layers.params[1]", "expected an integer"),
    ({"params": [10]}, "layers.params", "1 entries for 2 names"),
    ({"name": ["a", "a"]}, "layers.name[1]", "duplicate layer name"),
    ({"name": ["a", ""]}, "layers.name[1]", "non-empty"),
    ({"macs": [1, -1]}, "layers.macs[1]", ">= 0"),
    ({"shape": [[1, 2], [3, 4]]}, "layers", "unknown column 'shape'"),
    ({"loss": None}, "layers", "missing required column 'loss'"),
    ({"bits": {"a": 1}}, "layers.bits", "expected a list"),
])
def test_bad_columns_are_refused_with_the_field_named(change: dict, field: str, words: str) -> None:
    with pytest.raises(ProblemError) as err:
        parse_problem_json(_columns(**change))
    assert err.value.field == field and words in str(err.value)


def test_columnar_writing_refuses_what_the_columns_cannot_hold() -> None:
    layer = Layer(name="a", params=10, choices=(Choice(bits=2, loss=1.0), Choice(bits=8, loss=0.0)), min_bits=4)
    problem = AllocationProblem("t", (layer,), Budget(avg_bits=6))
    with pytest.raises(ProblemError, match="column form"):
        dumps_problem(problem, columnar=True)
    assert parse_problem_json(dumps_problem(problem)).layers == problem.layers  # the row form still holds it


@settings(max_examples=40, deadline=None)
@given(plain_problems())
def test_large_list_form_files_are_held_as_columns(problem: AllocationProblem) -> None:
    import cetopt.problem.io as io

    text = dumps_problem(problem)
    small = parse_problem_json(text)
    threshold = io.ROWS_AS_COLUMNS
    io.ROWS_AS_COLUMNS = 1  # every file counts as large here
    try:
        large = parse_problem_json(text)
    finally:
        io.ROWS_AS_COLUMNS = threshold
    assert small.columns is None and large.columns is not None
    assert tuple(large.layers) == tuple(small.layers) == problem.layers
    assert dumps_problem(large) == text  # written back byte for byte


@pytest.mark.parametrize("layer, field", [
    ({"name": "b", "params": 20, "choices": [{"bits": 2, "loss": 0.5}, {"bits": 2, "loss": 0.1}]},
     "layers[1].choices[1]"),
    ({"name": "b", "params": 0, "choices": [{"bits": 2, "loss": 0.5}]}, "layers[1].params"),
    ({"name": "b", "params": 20, "choices": [{"bits": 2, "loss": "x"}]}, "layers[1].choices[0].loss"),
])
def test_large_list_form_files_name_bad_fields_as_the_list_form_does(monkeypatch: pytest.MonkeyPatch,
                                                                      layer: dict, field: str) -> None:
    import cetopt.problem.io as io

    monkeypatch.setattr(io, "ROWS_AS_COLUMNS", 1)
    text = json.dumps({"format": "cetopt.problem/1", "name": "t", "budget": {"avg_bits": 4},
                       "layers": [{"name": "a", "params": 10, "choices": [{"bits": 4, "loss": 0.0}]}, layer]})
    with pytest.raises(ProblemError) as err:
        parse_problem_json(text)
    assert err.value.field is not None and err.value.field.startswith(field)


def test_make_problem_columnar_writes_the_column_form(tmp_path: Path) -> None:
    from cetopt.cli import main
    from cetopt.problem.io import load_problem
    from cetopt.problem.synthetic import synthetic_problem

    path = tmp_path / "p.json"
    assert main(["make-problem", "synthetic", "--layers", "30", "--choices", "8", "--seed", "3", "--columnar",
                 "--out", str(path)]) == 0
    assert isinstance(json.loads(path.read_text())["layers"], dict)
    loaded = load_problem(path)
    assert loaded.columns is not None
    assert tuple(loaded.layers) == synthetic_problem(30, n_choices=8, seed=3).layers

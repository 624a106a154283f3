"""The plan format: cetopt.plan/2 carries a full choice per layer, cetopt.plan/1 files still load, plans come
from solves (rank, series and rounding choices included), and bad files name the field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer
from cetopt.quant.plan import LayerChoice, Plan, plan_from_result
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.solvers.api import solve

choices = st.one_of(
    st.builds(LayerChoice, bits=st.integers(2, 16), rounding=st.sampled_from(("nearest", "major-axis"))),
    st.builds(LayerChoice, bits=st.integers(1, 16)),
    st.builds(LayerChoice, bits=st.integers(1, 32), rank=st.integers(1, 512)),
    st.builds(LayerChoice, bits=st.integers(2, 8), terms=st.integers(2, 8)),
    st.builds(LayerChoice, bits=st.integers(2, 8), quantizer=st.builds(QuantizerSpec, symmetric=st.booleans(),
                                                                       per_channel=st.booleans())),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.]{0,12}", fullmatch=True), choices, min_size=1, max_size=6))
def test_v2_round_trip(layers: dict[str, LayerChoice]) -> None:
    plan = Plan(layers=layers, model="m.py:spec", problem="m-cet", extra={"solver": "dp"})
    again = Plan.from_json(json.dumps(plan.to_dict()))
    assert again == plan
    assert again.bits == {n: c.bits for n, c in layers.items()}


def test_v1_file_still_loads(tmp_path) -> None:
    old = {"format": "cetopt.plan/1", "model": "digits-cnn", "quantizer": {"symmetric": True}, "activation": None,
           "layers": {"conv1": {"bits": 4}, "fc": {"bits": 8}}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    plan = Plan.load(tmp_path / "old.json")
    assert plan.layers == {"conv1": LayerChoice(4), "fc": LayerChoice(8)} and plan.is_plain
    with pytest.raises(ProblemError, match="layers.fc"):  # plan/1 had bits only
        Plan.from_dict({**old, "layers": {"fc": {"bits": 8, "rank": 3}}})


def test_bits_constructor_and_consistency() -> None:
    assert Plan(bits={"a": 4}).layers == {"a": LayerChoice(4)}
    assert Plan(layers={"a": LayerChoice(4, rank=2)}).bits == {"a": 4}
    with pytest.raises(ProblemError, match="disagree"):
        Plan(bits={"a": 3}, layers={"a": LayerChoice(4)})


@pytest.mark.parametrize("entry, field", [
    ({"bits": 0}, "layers.x.bits"), ({"bits": 4, "rank": 0}, "layers.x.rank"), ({"bits": 4, "terms": 0}, "layers.x.terms"),
    ({"bits": 4, "rounding": "up"}, "layers.x.rounding"), ({"bits": 4, "rank": 2, "terms": 2}, "layers.x.terms"),
    ({"bits": 4, "colour": 1}, "layers.x"), ({"bits": 4, "quantizer": {"clip": 3}}, "layers.x.quantizer.clip"),
    ({"bits": 1, "terms": 2}, "layers.x.bits"), ({"bits": 4, "rank": 2, "rounding": "major-axis"}, "layers.x.rounding"),
])
def test_bad_entries_name_the_field(entry: dict, field: str) -> None:
    with pytest.raises(ProblemError) as err:
        Plan.from_dict({"format": "cetopt.plan/2", "layers": {"x": entry}})
    assert err.value.field == field


def test_a_solve_result_is_refused_with_the_fix() -> None:
    with pytest.raises(ProblemError, match="solve --out"):
        Plan.from_dict({"bits": {"a": 4}, "choices": {"a": 0}, "status": "optimal"})


def _mixed_problem() -> AllocationProblem:
    """Layer a: bits only; layer b: a rank and a series choice that are far cheaper in loss per bit."""
    a = Layer(name="a", params=64, shape=(8, 8), choices=(Choice(bits=2, loss=1.0), Choice(bits=8, loss=0.0)))
    b = Layer(name="b", params=256, shape=(16, 16), choices=(
        Choice(bits=2, loss=5.0), Choice(bits=8, rank=2, loss=0.1), Choice(bits=3, terms=2, loss=0.2)))
    return AllocationProblem(name="mixed", layers=(a, b), budget=Budget(avg_bits=4.0),
                             metadata={"model": "toy", "model_target": "toy.py:spec", "rounding": "major-axis",
                                       "quantizer": QuantizerSpec(symmetric=False).to_dict(), "method": "cet",
                                       "fingerprint_weights": "ab" * 32})


def test_plan_from_result_carries_every_choice() -> None:
    problem = _mixed_problem()
    result = solve(problem, "bruteforce")
    plan = plan_from_result(problem, result)
    for layer in problem.layers:  # independent truth: the chosen Choice itself
        c = layer.choices[result.choices[layer.name]]
        got = plan.layers[layer.name]
        assert (got.bits, got.rank, got.terms) == (c.bits, c.rank, c.terms)
        assert got.rounding == ("major-axis" if c.rank is None and c.terms == 1 else "nearest")
    assert plan.layers["b"] == LayerChoice(8, rank=2)  # the optimum here is the low-rank choice
    assert plan.model == "toy.py:spec" and plan.problem == "mixed"
    assert plan.quantizer == QuantizerSpec(symmetric=False)
    assert plan.extra["fingerprint_weights"] == "ab" * 32 and plan.extra["solver"] == "bruteforce"
    assert Plan.from_json(json.dumps(plan.to_dict())) == plan


def test_plan_from_a_failed_result_is_refused() -> None:
    problem = _mixed_problem().with_budget(Budget(avg_bits=0.5))
    result = solve(problem, "dp")
    with pytest.raises(ProblemError, match="no allocation"):
        plan_from_result(problem, result)

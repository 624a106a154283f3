"""cetopt.negatives on hand-made numbers: which candidates count as negative, and what a plan relies on."""

from __future__ import annotations

import numpy as np

from cetopt.negatives import negative_candidates, plan_reliance
from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer


def test_negative_candidates_by_predicted_or_measured_with_a_rounding_tolerance() -> None:
    labels = {"a": ["2b", "4b"], "b": ["2b", "4b"]}
    predicted = {"a": np.array([-0.5, 0.1]), "b": np.array([0.2, -1e-13])}  # -1e-13: rounding next to 0.5
    measured = {"a": np.array([-0.4, 0.1]), "b": None}
    found = negative_candidates(labels, predicted, measured)
    assert found == {"a": {"2b": {"predicted": -0.5, "measured": -0.4}}}
    only_measured = negative_candidates(labels, {"a": np.array([0.3, 0.1]), "b": np.array([0.2, 0.1])},
                                        {"a": np.array([-0.2, 0.1]), "b": None})
    assert only_measured == {"a": {"2b": {"predicted": 0.3, "measured": -0.2}}}


def test_plan_reliance_counts_the_planned_negatives() -> None:
    layers = (Layer(name="a", params=10, choices=(Choice(bits=2, loss=-0.5), Choice(bits=4, loss=0.1))),
              Layer(name="b", params=10, choices=(Choice(bits=2, loss=0.3), Choice(bits=4, loss=0.05))))
    problem = AllocationProblem(name="p", layers=layers, budget=Budget(avg_bits=3.0),
                                metadata={"negative_changes": {"b": {"2b": {"predicted": 0.3, "measured": -0.1}}}})
    reliance = plan_reliance(problem, {"a": 0, "b": 0})
    assert reliance is not None and [r[:2] for r in reliance.layers] == [("a", "2b"), ("b", "2b")]
    assert reliance.negative_predicted == -0.5 and reliance.plan_predicted == -0.2
    assert "2 layer(s)" in reliance.message() and "measured alone -0.1" in reliance.message()
    assert plan_reliance(problem, {"a": 1, "b": 1}) is None
    whole = plan_reliance(problem, {"a": 1, "b": 1}, measured=-0.01)
    assert whole is not None and not whole.layers and "whole plan's measured" in whole.message()

"""Signal effects against hand computations: which signal carries a cost model's prices."""

from __future__ import annotations

import numpy as np
import pytest

from cetopt.costmodels.base import LayerSignals
from cetopt.costmodels.dominance import describe_effects, signal_effects
from cetopt.costmodels.registry import get_cost_model


def _layer(**signals: object) -> LayerSignals:
    energy = np.ones(3)
    return LayerSignals(name="l", params=10, energy=energy, **signals)  # type: ignore[arg-type]


def test_cet_effects_are_each_terms_share_of_the_cost() -> None:
    # cet = g.d + 1/2 d'Hd: removing a term moves each cost by exactly that term
    linear, quadratic = np.array([0.1, -0.2, 0.0]), np.array([2.0, 4.0, 6.0])
    effects = signal_effects(get_cost_model("cet"), {"l": _layer(linear=linear, quadratic=quadratic)})
    total = np.abs(linear + 0.5 * quadratic).sum()
    assert effects == pytest.approx({"linear": np.abs(linear).sum() / total,
                                     "quadratic": np.abs(0.5 * quadratic).sum() / total})


def test_cet_upper_is_dominated_by_the_measured_change_where_it_wins_the_max() -> None:
    # measured - g.d exceeds 1/2 d'Hd on every candidate, and g.d is inside its noise (shrunk to 0)
    layer = _layer(linear=np.array([1e-4, -1e-4, 2e-4]), linear_stderr=np.array([1e-3, 1e-3, 1e-3]),
                   quadratic=np.array([0.01, 0.02, 0.03]), measured=np.array([1.0, 2.0, 3.0]))
    effects = signal_effects(get_cost_model("cet-upper"), {"l": layer})
    costs = np.maximum(0.5 * layer.quadratic, layer.measured - layer.linear)
    without_measured = np.maximum(0.5 * layer.quadratic, -layer.linear)
    assert effects["measured"] == pytest.approx(np.abs(costs - without_measured).sum() / np.abs(costs).sum())
    assert effects["measured"] > 0.9 and effects["quadratic"] == 0.0
    assert describe_effects(effects).endswith("(dominant: measured)")


def test_hawq_has_one_signal_and_zero_costs_give_no_effects() -> None:
    layer = _layer(linear=np.zeros(3), trace_per_weight=0.5)
    assert signal_effects(get_cost_model("hawq-v3"), {"l": layer}) == {"trace_per_weight": pytest.approx(1.0)}
    assert signal_effects(get_cost_model("hawq-v3"), {"l": _layer(linear=np.zeros(3), trace_per_weight=0.0)}) == {}
    assert describe_effects({}) == "-"

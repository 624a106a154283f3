"""cet-upper-monotone against a brute-force reading of its definition: each candidate's cost is the largest
cet-upper cost among the layer's candidates with an error energy no larger than its own."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.costmodels import LayerSignals, get_cost_model
from cetopt.costmodels.monotone import running_max_by


def _signals(energy: np.ndarray, linear: np.ndarray, measured: np.ndarray) -> LayerSignals:
    k = len(energy)
    return LayerSignals(name="l", params=10, energy=energy, linear=linear, linear_stderr=np.full(k, 1e-4),
                        quadratic=np.abs(energy) * 0.1, measured=measured)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=8))
def test_each_cost_is_the_largest_upper_cost_at_or_below_its_error(rows: list[tuple[int, float, float]]) -> None:
    energy = np.array([float(e) for e, _, _ in rows])  # few distinct values: ties in the error happen
    linear = np.array([g for _, g, _ in rows])
    measured = np.array([m for _, _, m in rows])
    layer = _signals(energy, linear, measured)
    upper = get_cost_model("cet-upper").estimate(layer).loss
    got = get_cost_model("cet-upper-monotone").estimate(layer)
    expected = np.array([max(upper[j] for j in range(len(rows)) if energy[j] <= energy[k]) for k in range(len(rows))])
    np.testing.assert_allclose(got.loss, expected)
    assert np.all(got.loss >= upper - 1e-15)
    for k in range(len(rows)):  # never cheaper than a candidate with a smaller error
        assert all(got.loss[k] >= got.loss[j] for j in range(len(rows)) if energy[j] <= energy[k])


def test_the_mobilenetv2_layer_that_dp_took_at_three_bits_is_priced_like_four() -> None:
    """features.17.conv.1.0's cet-upper costs at 2/3/4/6/8 bits (problems/mobilenetv2): 3 bits priced below 8.
    Monotone, no width is cheaper than a finer one, and the finest keeps its cost."""
    costs = np.array([-0.001423, -0.012115, 0.000829, -0.001108, 1.2e-05])
    energy = np.array([16.0, 4.0, 1.0, 0.25, 0.0625])  # error energy falls ~4x per bit
    monotone, source = running_max_by(energy, costs)
    np.testing.assert_allclose(monotone, [0.000829, 0.000829, 0.000829, 1.2e-05, 1.2e-05])
    assert list(source) == [2, 2, 2, 4, 4]
    assert np.all(np.diff(monotone[::-1]) >= 0)  # finer to coarser: never cheaper

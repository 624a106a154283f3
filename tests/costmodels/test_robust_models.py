"""The robust cost models' formulas, against element-by-element reference implementations (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, strategies as st

from cetopt.costmodels import LayerSignals, get_cost_model
from cetopt.costmodels.holdout import confirmed_linear

floats = st.floats(-10, 10, allow_nan=False)
positive = st.floats(0, 10, allow_nan=False)
K = 4


def _signals(**values: list[float]) -> LayerSignals:
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    arrays.setdefault("energy", np.ones(K))
    return LayerSignals(name="l", params=10, **arrays)


@given(st.lists(floats, min_size=K, max_size=K), st.lists(positive, min_size=K, max_size=K),
       st.lists(positive, min_size=K, max_size=K))
def test_shrink_soft_thresholds_the_gradient_term(linear, stderr, quadratic) -> None:  # type: ignore[no-untyped-def]
    model = get_cost_model("cet-shrink")
    got = model.estimate(_signals(linear=linear, linear_stderr=stderr, quadratic=quadratic))
    for k in range(K):
        t = model.z * stderr[k]  # type: ignore[attr-defined]
        kept = linear[k] - t if linear[k] > t else (linear[k] + t if linear[k] < -t else 0.0)
        assert math.isclose(got.loss[k], kept + 0.5 * quadratic[k], rel_tol=1e-12, abs_tol=1e-12)
        # never more optimistic than the raw estimate, never past the curvature-only value
        assert got.loss[k] >= linear[k] + 0.5 * quadratic[k] - 1e-12 or linear[k] > 0
    assert np.array_equal(got.stderr, np.asarray(stderr))


@given(st.lists(floats, min_size=K, max_size=K), st.lists(floats, min_size=K, max_size=K))
def test_holdout_keeps_only_confirmed_gains(cal, val) -> None:  # type: ignore[no-untyped-def]
    got = confirmed_linear(np.array(cal), np.array(val))
    for k in range(K):
        a, b = cal[k], val[k]
        same_sign = (a > 0 and b > 0) or (a < 0 and b < 0)
        comparable = same_sign and max(abs(a), abs(b)) <= 2 * min(abs(a), abs(b))
        expected = math.copysign(min(abs(a), abs(b)), a) if comparable else 0.0
        assert got[k] == expected
        assert abs(got[k]) <= abs(a)


@given(st.lists(floats, min_size=K, max_size=K), st.lists(positive, min_size=K, max_size=K),
       st.lists(st.floats(0.01, 10), min_size=K, max_size=K), st.lists(positive, min_size=K, max_size=K))
def test_trust_clips_negative_predictions_outside_the_radius(linear, quadratic, energy, radius) -> None:  # type: ignore[no-untyped-def]
    got = get_cost_model("cet-trust").estimate(_signals(linear=linear, quadratic=quadratic, energy=energy,
                                                        lossless_radius=radius)).loss
    for k in range(K):
        signed = linear[k] + 0.5 * quadratic[k]
        inside = math.sqrt(energy[k]) <= radius[k]
        expected = signed if (signed >= 0 or inside) else 0.5 * quadratic[k]
        assert math.isclose(got[k], expected, rel_tol=1e-12, abs_tol=1e-12)


def test_measured_is_the_measurement() -> None:
    values = [0.3, -0.1, 2.0, 0.0]
    assert list(get_cost_model("measured").estimate(_signals(linear=[0.0] * K, measured=values)).loss) == values

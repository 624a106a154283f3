"""Per-example outcomes travel in bench rows and become paired CIs in the summary."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.bench.store import decode_outcomes, encode_outcomes
from cetopt.bench.summary import quality_table
from cetopt.stats import paired_bootstrap_ci


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=3000))
def test_binary_outcomes_round_trip_exactly(values: list[float]) -> None:
    text = encode_outcomes(np.array(values))
    assert text.startswith("bits:") and len(text) < 40 + len(values) // 4
    np.testing.assert_array_equal(decode_outcomes(text), values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=500))
def test_continuous_outcomes_round_trip_to_float16(values: list[float]) -> None:
    decoded = decode_outcomes(encode_outcomes(np.array(values)))
    assert decoded is not None and decoded.shape == (len(values),)
    np.testing.assert_allclose(decoded, values, atol=1e-3)


def test_damaged_text_decodes_to_none() -> None:
    for text in (None, "", "bits:3:%%%", "f16:4:AAAA", "nope"):
        assert decode_outcomes(text) is None


def _row(solver: str, outcomes: np.ndarray) -> dict:  # type: ignore[type-arg]
    return {"problem": "p", "budget_avg_bits": 3.0, "solver": solver, "method": "cet-shrink", "metric_name": "accuracy",
            "metric": float(outcomes.mean()), "fp_metric": 1.0, "packed_ratio": 10.0,
            "outcomes": encode_outcomes(outcomes)}


def test_summary_reports_the_paired_ci_and_calls_ties_ties() -> None:
    rng = np.random.default_rng(0)
    plan = (rng.random(400) < 0.9).astype(float)
    hawq = plan.copy()
    hawq[:3] = 1.0 - hawq[:3]  # three examples differ: a tie
    uniform = (rng.random(400) < 0.6).astype(float)  # far worse: the plan is ahead
    _, table = quality_table([_row("dp", plan), _row("hawq-v3", hawq), _row("uniform", uniform)])
    (row,) = table
    want = paired_bootstrap_ci(plan, hawq)
    assert row[8] == f"{want.estimate:+.4f} [{want.low:+.4f}, {want.high:+.4f}] tie"
    assert row[9].endswith("ahead") and row[1] == "cet-shrink"

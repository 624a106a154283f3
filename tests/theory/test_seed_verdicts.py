"""The seed-level accuracy reading shared by the seed papers' headline checks: numbers against scipy's t interval
computed here, and each reading reached by a case built for it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from cetopt.theory.seed_verdicts import MARGIN, Accuracy, accuracy_outcome, seed_difference


def test_interval_is_the_paired_t_interval() -> None:
    compressed = np.array([0.95, 0.97, 0.96, 0.94, 0.98])
    fp = np.array([0.96, 0.97, 0.97, 0.96, 0.97])
    d = compressed - fp
    half = stats.t.ppf(0.975, df=4) * d.std(ddof=1) / np.sqrt(5)
    out = seed_difference(compressed, fp)
    assert out.mean == pytest.approx(d.mean())
    assert (out.low, out.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert out.per_seed == pytest.approx(tuple(d))


def test_each_reading() -> None:
    assert seed_difference([0.9, 0.91, 0.9], [0.97, 0.97, 0.98]).outcome is Accuracy.DROP  # 7 points lost
    assert seed_difference([0.965, 0.966, 0.967], [0.97, 0.97, 0.971]).outcome is Accuracy.SMALL_DROP
    assert seed_difference([0.970, 0.972, 0.971], [0.970, 0.970, 0.971]).outcome is Accuracy.HELD
    assert seed_difference([0.90, 0.99, 0.93], [0.95, 0.95, 0.95]).outcome is Accuracy.UNCLEAR  # too wide
    one = seed_difference([0.5], [0.97])  # one seed: no spread, nothing to judge
    assert one.outcome is Accuracy.UNCLEAR and one.n_seeds == 1


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="fp"):
        seed_difference([0.9, 0.9], [0.9])


@given(st.floats(-0.2, 0.2), st.floats(0, 0.2), st.integers(2, 10))
def test_outcome_never_holds_when_the_whole_interval_is_below_the_margin(centre: float, half: float, n: int) -> None:
    low, high = centre - half, centre + half
    outcome = accuracy_outcome(low, high, n)
    if high < -MARGIN:
        assert outcome is Accuracy.DROP
    if outcome is Accuracy.HELD:
        assert high >= 0 and low >= -MARGIN


def test_overall_verdict_fails_on_any_fail_and_passes_only_on_all() -> None:
    from cetopt.theory.seed_verdicts import overall_verdict

    assert overall_verdict(["pass", "pass"]) == "pass"
    assert overall_verdict(["pass", "fail", "inconclusive"]) == "fail"
    assert overall_verdict(["inconclusive", "inconclusive"]) == "inconclusive"
    assert overall_verdict(["pass", "inconclusive"]) == "partial"
    assert overall_verdict([]) == "inconclusive"  # nothing judged is never a pass


def test_graded_verdict_passes_both_parts_and_grades_one_or_none() -> None:
    from cetopt.theory.report import Verdict
    from cetopt.theory.seed_verdicts import graded_verdict

    assert graded_verdict(True, True, "smaller", "not smaller", "x")[0] is Verdict.PASS
    assert graded_verdict(True, False, "smaller", "not smaller", "x") == (Verdict.PARTIAL,
                                                                         "smaller, but not at FP accuracy: x")
    assert graded_verdict(False, True, "smaller", "not smaller", "x") == (Verdict.PARTIAL,
                                                                         "at FP accuracy, but not smaller: x")
    assert graded_verdict(False, False, "smaller", "not smaller", "x")[0] is Verdict.INCONCLUSIVE

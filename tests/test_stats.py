"""cetopt.stats against exact truth: enumerated bootstrap distributions and scipy's t interval."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.stats import bootstrap_ci, paired_bootstrap_ci, paired_seed_ci, seed_summary


def test_constant_difference_has_a_point_interval() -> None:
    a = np.array([0.3, 0.9, 0.1, 0.5])
    ci = paired_bootstrap_ci(a, a - 0.25, n_boot=500, seed=1)
    assert ci.estimate == pytest.approx(0.25)
    assert ci.low == pytest.approx(0.25) and ci.high == pytest.approx(0.25)
    assert ci.verdict == "a"


def test_identical_plans_tie() -> None:
    a = np.array([1, 0, 1, 1, 0, 1], dtype=float)
    ci = paired_bootstrap_ci(a, a.copy(), n_boot=500)
    assert ci.verdict == "tie" and ci.estimate == 0.0


def test_matches_enumerated_bootstrap_distribution() -> None:
    # n=4: all 4^4 equally likely resamples give the exact bootstrap law of the mean difference
    d = np.array([1.0, 0.0, -1.0, 1.0])
    exact = np.array([d[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)])
    lo, hi = np.quantile(exact, [0.1, 0.9])
    ci = paired_bootstrap_ci(d, np.zeros(4), confidence=0.8, n_boot=40_000, seed=3)
    assert ci.low == pytest.approx(lo, abs=0.13)
    assert ci.high == pytest.approx(hi, abs=0.13)


def test_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    a, b = base + 0.1, base  # a is always exactly 0.1 better: paired CI is tight, verdict "a"
    assert paired_bootstrap_ci(a, b).verdict == "a"
    lo, hi = bootstrap_ci(a - b)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def test_coverage_is_close_to_nominal() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    trials = 200
    for t in range(trials):
        a = rng.binomial(1, 0.8, size=150).astype(float)
        b = rng.binomial(1, 0.75, size=150).astype(float)
        ci = paired_bootstrap_ci(a, b, n_boot=400, seed=t)
        hits += ci.low <= 0.05 <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def test_seed_summary_matches_scipy_t_interval() -> None:
    from scipy import stats as sps

    values = np.array([0.94, 0.951, 0.947, 0.939, 0.955])
    summary = seed_summary(values)
    lo, hi = sps.t.interval(0.95, df=4, loc=values.mean(), scale=sps.sem(values))
    assert summary.low == pytest.approx(lo) and summary.high == pytest.approx(hi)
    assert summary.n_seeds == 5


def test_single_seed_is_a_tie() -> None:
    summary, verdict = paired_seed_ci([0.9], [0.8])
    assert verdict == "tie" and summary.n_seeds == 1


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="b: paired outcomes need equal lengths"):
        paired_bootstrap_ci([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_ci([1.0], [1.0], confidence=1.5)
    with pytest.raises(ValueError, match="a: contains NaN"):
        paired_bootstrap_ci([np.nan], [1.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=40), st.integers(0, 1000))
def test_interval_contains_the_point_estimate_and_is_ordered(values: list[float], seed: int) -> None:
    d = np.asarray(values)
    ci = paired_bootstrap_ci(d, np.zeros_like(d), n_boot=300, seed=seed)
    assert d.min() - 1e-12 <= ci.low <= ci.high <= d.max() + 1e-12
    assert ci.verdict == ("a" if ci.low > 0 else "b" if ci.high < 0 else "tie")


# ---- cluster bootstrap -------------------------------------------------------------------------------------------

def test_singleton_clusters_match_the_example_bootstrap() -> None:
    # every cluster of size 1: resampling clusters is resampling examples, so both intervals estimate the same
    # percentiles (different random streams: compare within Monte Carlo error)
    from cetopt.stats import clustered_bootstrap_ci

    rng = np.random.default_rng(4)
    a = rng.binomial(1, 0.8, size=300).astype(float)
    b = rng.binomial(1, 0.7, size=300).astype(float)
    clustered = clustered_bootstrap_ci(a, b, np.arange(300), n_boot=20_000, seed=1)
    example = paired_bootstrap_ci(a, b, n_boot=20_000, seed=2)
    assert clustered.n_clusters == 300 and clustered.estimate == pytest.approx(example.estimate)
    assert clustered.low == pytest.approx(example.low, abs=0.006)
    assert clustered.high == pytest.approx(example.high, abs=0.006)


def test_constant_clusters_match_the_enumerated_bootstrap_of_cluster_means() -> None:
    # 4 equal-size clusters, constant inside: the cluster bootstrap's law is that of the mean of 4 cluster means
    # drawn with replacement, enumerated exactly over all 4^4 draws
    from cetopt.stats import clustered_bootstrap_ci

    means = np.array([1.0, 0.0, -1.0, 1.0])
    d = np.repeat(means, 25)
    exact = np.array([means[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)])
    lo, hi = np.quantile(exact, [0.1, 0.9])
    ci = clustered_bootstrap_ci(d, np.zeros_like(d), np.repeat(["p", "q", "r", "s"], 25), confidence=0.8,
                                n_boot=40_000, seed=3)
    assert ci.low == pytest.approx(lo, abs=0.13) and ci.high == pytest.approx(hi, abs=0.13)
    assert ci.n_clusters == 4 and ci.n == 100


def test_correlated_clusters_widen_the_interval() -> None:
    # 12 photos x 30 crops whose outcomes share a photo effect: the crops are not 360 independent draws, and the
    # example-level interval is several times too narrow
    from cetopt.stats import clustered_bootstrap_ci

    rng = np.random.default_rng(0)
    effect = np.repeat(rng.normal(0.0, 0.3, size=12), 30)
    d = effect + rng.normal(0.0, 0.05, size=360)
    photos = np.repeat(np.arange(12), 30)
    clustered = clustered_bootstrap_ci(d, np.zeros_like(d), photos, n_boot=4000, seed=0)
    example = paired_bootstrap_ci(d, np.zeros_like(d), n_boot=4000, seed=0)
    assert (clustered.high - clustered.low) > 3.0 * (example.high - example.low)
    assert "12 clusters" in clustered.method and "360 examples" in example.method


def test_cluster_coverage_is_close_to_nominal() -> None:
    # the true mean difference is 0.05; clusters carry a shared effect, so only the cluster bootstrap covers it
    from cetopt.stats import clustered_bootstrap_ci

    rng = np.random.default_rng(11)
    hits = 0
    trials = 150
    for t in range(trials):
        effect = np.repeat(rng.normal(0.0, 0.2, size=30), 10)
        d = 0.05 + effect + rng.normal(0.0, 0.1, size=300)
        ci = clustered_bootstrap_ci(d, np.zeros_like(d), np.repeat(np.arange(30), 10), n_boot=400, seed=t)
        hits += ci.low <= 0.05 <= ci.high
    assert 0.85 <= hits / trials <= 0.99


def test_paired_ci_picks_the_method_from_the_clusters() -> None:
    from cetopt.stats import paired_ci

    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0])
    assert paired_ci(a, b).n_clusters is None
    assert paired_ci(a, b, ["x", "x", "y", "y"]).n_clusters == 2


def test_cluster_bootstrap_names_bad_fields() -> None:
    from cetopt.stats import clustered_bootstrap_ci

    with pytest.raises(ValueError, match="clusters: one cluster id per example"):
        clustered_bootstrap_ci([1.0, 0.0], [0.0, 0.0], ["a"])
    one = clustered_bootstrap_ci([1.0, 0.0], [0.0, 0.0], ["a", "a"])
    assert one.low == one.high == one.estimate == 0.5  # one cluster: nothing to resample

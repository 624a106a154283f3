"""Paired bootstrap confidence intervals and seed-level summaries for the result tables.

Two plans measured on the *same* test inputs are compared example by example: the bootstrap resamples
example indices once and applies them to both outcome vectors, so the interval reflects the paired
difference, not two independent noises. A difference whose interval contains zero is a tie, and the
tables say so (``verdict == "tie"``). Over seeds (retrained models, calibration draws) the summary is
the mean with a Student-t interval over the seeds.

When test examples come in clusters that are not independent draws (crops cut from the same photo, sentences
from the same document), resampling examples makes the interval too narrow: :func:`clustered_bootstrap_ci`
resamples whole clusters instead (``scipy.stats.bootstrap`` over the clusters' sums, the ratio estimator of
the mean; Davison & Hinkley 1997, sec. 3.8). With every cluster of size 1 it is the example-level bootstrap.

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

Statistic = Literal["mean", "median"]
Verdict = Literal["a", "b", "tie"]

_STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda x: np.mean(x, axis=-1),
    "median": lambda x: np.median(x, axis=-1),
}


@dataclass(frozen=True)
class PairedCI:
    """Bootstrap interval of ``statistic(a) - statistic(b)`` over paired examples.

    ``estimate`` is the difference on the full sample; ``low``/``high`` the percentile interval at
    ``confidence``. ``verdict`` is ``"a"`` when the whole interval is above zero, ``"b"`` when below,
    ``"tie"`` when it contains zero (a difference inside its CI is not a win).
    """

    statistic: str
    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_boot: int
    seed: int
    mean_a: float
    mean_b: float
    n_clusters: int | None = None

    @property
    def method(self) -> str:
        """How the interval was drawn, for tables: ``paired bootstrap over 384 examples`` or
        ``cluster bootstrap over 11 clusters (384 examples)``."""
        if self.n_clusters is None:
            return f"paired bootstrap over {self.n} examples"
        return f"cluster bootstrap over {self.n_clusters} clusters ({self.n} examples)"

    @property
    def verdict(self) -> Verdict:
        if self.low > 0.0:
            return "a"
        if self.high < 0.0:
            return "b"
        return "tie"

    def describe(self, scale: float = 1.0, unit: str = "") -> str:
        """``+1.2 [+0.4, +2.0]`` with values multiplied by ``scale`` (e.g. 100 for points)."""
        return (f"{self.estimate * scale:+.2f}{unit} "
                f"[{self.low * scale:+.2f}, {self.high * scale:+.2f}]")


@dataclass(frozen=True)
class SeedSummary:
    """Mean over seeds with a Student-t interval; ``low == high == mean`` when only one seed."""

    mean: float
    std: float
    low: float
    high: float
    confidence: float
    n_seeds: int

    def describe(self, scale: float = 1.0, digits: int = 3) -> str:
        """``0.947 ± 0.004 (n=5)``: the mean and the half-width of the interval."""
        half = (self.high - self.low) / 2 * scale
        return f"{self.mean * scale:.{digits}f} ± {half:.{digits}f} (n={self.n_seeds})"


def _as_outcomes(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of per-example outcomes, "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values; drop or fix those examples")
    return array


def _check_confidence(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must lie in (0, 1), got {confidence}")
    if n_boot < 100:
        raise ValueError(f"n_boot: at least 100 resamples are needed for a percentile interval, "
                         f"got {n_boot}")


def paired_bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                        statistic: Statistic = "mean", confidence: float = 0.95,
                        n_boot: int = 2000, seed: int = 0) -> PairedCI:
    """Percentile bootstrap CI of ``statistic(a) - statistic(b)`` for paired outcomes.

    ``a`` and ``b``: shape (n,), outcome of example i under plan A and plan B (e.g. 1.0 if correct).
    Resamples example indices with replacement ``n_boot`` times (chunked to bound memory).
    """
    if statistic not in _STATISTICS:
        raise ValueError(f"statistic: unknown '{statistic}', use one of {sorted(_STATISTICS)}")
    _check_confidence(confidence, n_boot)
    a_arr, b_arr = _as_outcomes(a, "a"), _as_outcomes(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"b: paired outcomes need equal lengths, got {a_arr.size} and {b_arr.size}")
    stat = _STATISTICS[statistic]
    n = a_arr.size
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        diffs[start:stop] = stat(a_arr[idx]) - stat(b_arr[idx])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    estimate = float(stat(a_arr) - stat(b_arr))
    return PairedCI(statistic=statistic, estimate=estimate, low=float(low), high=float(high),
                    confidence=confidence, n=n, n_boot=n_boot, seed=seed,
                    mean_a=float(a_arr.mean()), mean_b=float(b_arr.mean()))


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, statistic: Statistic = "mean",
                 confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of ``statistic(values)`` for one sample, shape (n,)."""
    array = _as_outcomes(values, "values")
    ci = paired_bootstrap_ci(array, np.zeros_like(array), statistic=statistic,
                             confidence=confidence, n_boot=n_boot, seed=seed)
    return ci.low, ci.high


def clustered_bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                           clusters: Sequence[object] | np.ndarray, *, confidence: float = 0.95,
                           n_boot: int = 2000, seed: int = 0) -> PairedCI:
    """Cluster (paired) bootstrap CI of ``mean(a) - mean(b)``: whole clusters are resampled with replacement.

    ``a``, ``b``: shape (n,), outcome of example i under plans A and B; ``clusters``: shape (n,), the source of
    example i (photo id, document id; any hashable). Each resample draws ``n_clusters`` clusters with
    replacement and takes sum(d) / count over the examples they hold (the mean over examples, so clusters
    weigh by their size), ``d = a - b``. Percentile interval from ``scipy.stats.bootstrap``.
    """
    from scipy import stats as sps

    _check_confidence(confidence, n_boot)
    a_arr, b_arr = _as_outcomes(a, "a"), _as_outcomes(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"b: paired outcomes need equal lengths, got {a_arr.size} and {b_arr.size}")
    labels = np.asarray(clusters, dtype=object)
    if labels.shape != a_arr.shape:
        raise ValueError(f"clusters: one cluster id per example is needed, got {labels.size} ids for "
                         f"{a_arr.size} examples")
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(codes).astype(np.float64)
    sums = np.bincount(codes, weights=a_arr - b_arr)
    estimate = float(np.mean(a_arr) - np.mean(b_arr))
    ratios = sums / counts
    if counts.size == 1 or np.allclose(ratios, ratios[0], rtol=0.0, atol=1e-15):
        low = high = estimate  # one cluster, or every cluster has the same mean difference: nothing varies
    else:
        result = sps.bootstrap((sums, counts), lambda s, c, axis=-1: s.sum(axis=axis) / c.sum(axis=axis),
                               n_resamples=n_boot, paired=True, vectorized=True, confidence_level=confidence,
                               method="percentile", rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return PairedCI(statistic="mean", estimate=estimate, low=low, high=high, confidence=confidence,
                    n=int(a_arr.size), n_boot=n_boot, seed=seed, mean_a=float(a_arr.mean()),
                    mean_b=float(b_arr.mean()), n_clusters=int(counts.size))


def paired_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
              clusters: Sequence[object] | np.ndarray | None = None, *, confidence: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> PairedCI:
    """The paired CI of ``mean(a) - mean(b)`` the data's sampling calls for: the cluster bootstrap when the
    examples carry cluster ids (``ModelSpec.test_clusters``), else the example-level paired bootstrap."""
    if clusters is None:
        return paired_bootstrap_ci(a, b, confidence=confidence, n_boot=n_boot, seed=seed)
    return clustered_bootstrap_ci(a, b, clusters, confidence=confidence, n_boot=n_boot, seed=seed)


def seed_summary(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> SeedSummary:
    """Mean over seeds with a two-sided Student-t interval, values shape (n_seeds,)."""
    from scipy import stats as sps

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must lie in (0, 1), got {confidence}")
    array = _as_outcomes(values, "values")
    mean = float(array.mean())
    if array.size == 1:
        return SeedSummary(mean=mean, std=0.0, low=mean, high=mean, confidence=confidence, n_seeds=1)
    std = float(array.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=array.size - 1)) * std / np.sqrt(array.size)
    return SeedSummary(mean=mean, std=std, low=mean - half, high=mean + half,
                       confidence=confidence, n_seeds=int(array.size))


def paired_seed_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                   confidence: float = 0.95) -> tuple[SeedSummary, Verdict]:
    """Seed-level paired comparison: t-interval of ``a[s] - b[s]`` and its verdict (a / b / tie).

    A single seed gives a degenerate interval and is always reported as a tie (no spread to judge).
    """
    a_arr, b_arr = _as_outcomes(a, "a"), _as_outcomes(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"b: paired seeds need equal lengths, got {a_arr.size} and {b_arr.size}")
    summary = seed_summary(a_arr - b_arr, confidence=confidence)
    if summary.n_seeds < 2:
        return summary, "tie"
    verdict: Verdict = "a" if summary.low > 0 else "b" if summary.high < 0 else "tie"
    return summary, verdict

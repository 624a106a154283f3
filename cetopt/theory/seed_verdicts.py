"""Seed-level verdicts shared by the seed papers' headline claims (cetopt.theory.headline, llc_rank,
lowrank_joint): is a compressed model's test accuracy "at FP accuracy", judged by the paired difference
over seeds (one compressed model and its FP32 original per seed) with a Student-t interval.

Pure numpy/scipy (cetopt.stats); no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Sequence

import numpy as np

from cetopt.stats import PairedCI, paired_bootstrap_ci, seed_summary
from cetopt.theory.report import Verdict

# a drop of at most one accuracy point still counts as "at FP accuracy" when it is the worst the interval allows;
# below it the claim of no loss is refuted (the zoo test sets have 360-5000 examples: one point is 4-50 examples)
MARGIN = 0.01
CONFIDENCE = 0.95


class Accuracy(StrEnum):
    """How a compressed model's test accuracy compares with FP32 over seeds."""

    HELD = "held"  # the interval reaches 0 or above and no drop beyond the margin is plausible
    SMALL_DROP = "small drop"  # significantly below FP32, but by less than the margin
    DROP = "drop"  # significantly below FP32 and a drop beyond the margin is plausible
    UNCLEAR = "unclear"  # the interval spans 0 and a drop beyond the margin: too wide to say; or < 2 seeds


@dataclass(frozen=True)
class SeedDifference:
    """Paired-by-seed difference (compressed - FP32) of a test metric, shape of the inputs (n_seeds,).

    Attributes:
        mean, low, high: mean difference and its Student-t interval at ``confidence`` (fractions, not points).
        n_seeds: seeds paired.
        per_seed: the differences themselves.
        margin: the drop that still counts as "at FP accuracy".
        outcome: the reading of the interval (:class:`Accuracy`).
    """

    mean: float
    low: float
    high: float
    n_seeds: int
    per_seed: tuple[float, ...]
    margin: float
    confidence: float
    outcome: Accuracy

    def describe(self, scale: float = 100.0) -> str:
        """``-0.28 [-0.61, +0.05] points (5 seeds)``."""
        return (f"{self.mean * scale:+.2f} [{self.low * scale:+.2f}, {self.high * scale:+.2f}] points "
                f"({self.n_seeds} seeds)")


def accuracy_outcome(low: float, high: float, n_seeds: int, margin: float = MARGIN) -> Accuracy:
    """The reading of a seed-level interval [low, high] of (compressed - FP32) accuracy (fractions)."""
    if n_seeds < 2:
        return Accuracy.UNCLEAR
    if high < 0:
        return Accuracy.SMALL_DROP if low >= -margin else Accuracy.DROP
    return Accuracy.HELD if low >= -margin else Accuracy.UNCLEAR


def seed_difference(compressed: Sequence[float], fp: Sequence[float], *, margin: float = MARGIN,
                    confidence: float = CONFIDENCE) -> SeedDifference:
    """Paired seed-level comparison of a test metric: ``compressed[s] - fp[s]`` with a t-interval (scipy.stats).

    Raises:
        ValueError: unequal lengths, no seeds, or non-finite values.
    """
    a, b = np.asarray(compressed, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"fp: one FP32 value per compressed value is needed, got shapes {a.shape} and {b.shape}")
    summary = seed_summary(a - b, confidence=confidence)
    low, high = (summary.low, summary.high) if summary.n_seeds > 1 else (-np.inf, np.inf)
    return SeedDifference(mean=summary.mean, low=float(low), high=float(high), n_seeds=summary.n_seeds,
                          per_seed=tuple(float(v) for v in a - b), margin=margin, confidence=confidence,
                          outcome=accuracy_outcome(low, high, summary.n_seeds, margin))


def example_ci(compressed: np.ndarray, fp: np.ndarray, *, seed: int = 0) -> PairedCI:
    """One seed's paired bootstrap CI of (compressed - FP32) mean outcome over its test examples, shape (n,)."""
    return paired_bootstrap_ci(compressed, fp, seed=seed)


def ci_dict(ci: PairedCI) -> dict[str, float]:
    """A per-seed CI as JSON numbers."""
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "n": ci.n}


def verdict_dict(result: Any, differences: Sequence[str] = ("accuracy",)) -> dict[str, Any]:
    """A verdict dataclass as JSON values: its fields, ``verdict`` as its word, and each :class:`SeedDifference`
    field named in ``differences`` with its outcome as its word."""
    out = asdict(result)
    out["verdict"] = result.verdict.value
    for key in differences:
        out[key] = {**asdict(getattr(result, key)), "outcome": getattr(result, key).outcome.value}
    return out


def graded_verdict(gained: bool, held: bool, gain: str, no_gain: str, where: str) -> tuple[Verdict, str]:
    """The verdict of a claim with two parts, a gain over a baseline and FP accuracy kept, once every failing case
    has been ruled out: pass when both are established, partial when one is, inconclusive when neither. ``gain`` /
    ``no_gain``: the gain said as established / as not established; ``where``: the numbers, appended."""
    if gained and held:
        return Verdict.PASS, f"{gain} and at FP accuracy: {where}"
    if gained:
        return Verdict.PARTIAL, f"{gain}, but not at FP accuracy: {where}"
    if held:
        return Verdict.PARTIAL, f"at FP accuracy, but {no_gain}: {where}"
    return Verdict.INCONCLUSIVE, f"neither a gain nor a loss established: {where}"


def overall_verdict(verdicts: Sequence[str]) -> str:
    """Several verdicts (words) in one: pass when every one passes, fail when any fails, inconclusive when every
    one is (or there are none), else partial."""
    if verdicts and all(v == "pass" for v in verdicts):
        return "pass"
    if any(v == "fail" for v in verdicts):
        return "fail"
    if all(v == "inconclusive" for v in verdicts):
        return "inconclusive"
    return "partial"

"""Joint low-rank's COMPACT form (arXiv 2412.06867: "minimise model size while preserving performance"): per model
and seed, the smallest storage at which the jointly optimised factors (cetopt.theory.lowrank_fit) keep the model
lossless, against truncated SVD chosen the same way.

The walk: rank fractions from large to small (:data:`FRACTIONS`); at each, the layers :func:`ranks_at` factorises
get truncated-SVD factors and, separately, factors optimised by :func:`fit_factors` at the same ranks (so the same
packed size). Both are measured on the labelled VALIDATION batches, which neither the optimisation (calibration
batches) nor the choice's judge (test set) uses. Per method, the fraction with the largest packed ratio that is
lossless on validation is chosen; a method with none keeps the FP32 model (ratio 1). The chosen models' TEST
accuracy is then compared with FP32's per seed (paired bootstrap over test examples) and over seeds (paired t).

Lossless means, by default, validation accuracy >= FP32's (criterion ``"accuracy"``): the paper's "performance"
is task accuracy, its claim is judged on test accuracy, and it is the rule CET's headline uses
(cetopt.theory.headline), so the two are comparable. The stricter criterion ``"loss"`` (validation loss change
<= 0, LLC's "loss unchanged or decreases") is recorded at every point and can be chosen instead; the optimised
factors drive the calibration loss far down, so the loss reading tells whether that gain carries to held-out data.
Every fraction's equal-rank comparison is kept too: it is the LOSSLESS form at more rank fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cetopt.errors import ProblemError
from cetopt.theory.lowrank_fit import fit_factors
from cetopt.theory.lowrank_joint import packed_ratio, ranks_at
from cetopt.theory.report import Verdict
from cetopt.theory.seed_verdicts import (MARGIN, Accuracy, SeedDifference, ci_dict, example_ci, graded_verdict,
                                         seed_difference, verdict_dict)

if TYPE_CHECKING:
    from cetopt.modelspec import ModelSpec

FRACTIONS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)  # rank / min(m, n), largest (least compression) first
CRITERIA = ("accuracy", "loss")
METHODS = ("joint", "svd")
REFINE = 4  # bisection steps per method below its smallest lossless grid fraction (grid step / 16)
TOLERANCE = 1e-12  # validation accuracies are k / n: equal ones compare equal up to rounding


@dataclass(frozen=True)
class CompactPoint:
    """One rank fraction: truncated SVD and optimised factors at the same ranks (same packed size), measured.

    Attributes:
        packed_ratio: FP32 size / packed size of the whole model (float32 factors, cetopt.quant.pack).
        svd_cal_loss, joint_cal_loss: mean calibration loss (what the factors are optimised for).
        {svd,joint}_val_accuracy: validation accuracy (fraction); {svd,joint}_val_dloss: validation-loss change vs
            FP32; {svd,joint}_test: test accuracy (fraction).
        joint_vs_svd, joint_vs_fp: paired bootstrap CIs of the test-accuracy difference over test examples.
    """

    fraction: float
    ranks: dict[str, int]
    packed_ratio: float
    svd_cal_loss: float
    joint_cal_loss: float
    svd_val_accuracy: float
    joint_val_accuracy: float
    svd_val_dloss: float
    joint_val_dloss: float
    svd_test: float
    joint_test: float
    joint_vs_svd: dict[str, float]
    joint_vs_fp: dict[str, float]


def is_lossless(point: CompactPoint, method: str, fp_val_accuracy: float, criterion: str = "accuracy") -> bool:
    """Whether ``method``'s factors at ``point`` are lossless on validation under ``criterion`` (:data:`CRITERIA`).

    Raises:
        ValueError: an unknown method or criterion.
    """
    if method not in METHODS:
        raise ValueError(f"method: one of {METHODS}, got {method!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: one of {CRITERIA}, got {criterion!r}")
    if criterion == "accuracy":
        return getattr(point, f"{method}_val_accuracy") + TOLERANCE >= fp_val_accuracy
    return getattr(point, f"{method}_val_dloss") <= 0.0


def choose(points: Sequence[CompactPoint], method: str, fp_val_accuracy: float,
           criterion: str = "accuracy") -> int | None:
    """Index of the lossless point (:func:`is_lossless`) with the largest packed ratio (ties: the earlier point);
    None when no point is lossless."""
    best: int | None = None
    for i, p in enumerate(points):
        if is_lossless(p, method, fp_val_accuracy, criterion) and (
                best is None or p.packed_ratio > points[best].packed_ratio):
            best = i
    return best


@dataclass(frozen=True)
class CompactWalk:
    """One model and seed: FP32's accuracies, every fraction's point, and each method's choice under ``criterion``.

    Attributes:
        skipped: fractions at which no layer's factors store less than its dense weight (nothing to measure).
        joint_chosen, svd_chosen: indices into ``points`` (None: no fraction is lossless, the model stays FP32).
        joint_vs_fp, svd_vs_fp, joint_vs_svd: paired bootstrap CIs over test examples of the chosen models' test
            accuracies (FP32 where a method chose nothing).
    """

    model: str
    seed: int
    criterion: str
    fp_val_accuracy: float
    fp_test: float
    points: tuple[CompactPoint, ...]
    skipped: tuple[float, ...]
    joint_chosen: int | None
    svd_chosen: int | None
    joint_vs_fp: dict[str, float]
    svd_vs_fp: dict[str, float]
    joint_vs_svd: dict[str, float]

    def index(self, method: str, criterion: str | None = None) -> int | None:
        """The point ``method`` chose, under the walk's criterion or, given ``criterion``, re-chosen under it."""
        if criterion is None or criterion == self.criterion:
            return getattr(self, f"{method}_chosen")
        return choose(self.points, method, self.fp_val_accuracy, criterion)

    def ratio(self, method: str, criterion: str | None = None) -> float:
        """The chosen packed ratio of ``method`` (1 when it chose nothing)."""
        index = self.index(method, criterion)
        return 1.0 if index is None else self.points[index].packed_ratio

    def test(self, method: str, criterion: str | None = None) -> float:
        """The chosen model's test accuracy of ``method`` (FP32's when it chose nothing)."""
        index = self.index(method, criterion)
        return self.fp_test if index is None else getattr(self.points[index], f"{method}_test")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **{f"{m}_ratio": self.ratio(m) for m in METHODS},
                **{f"{m}_chosen_test": self.test(m) for m in METHODS}}


class _PointMeasurer:
    """Measures :class:`CompactPoint` s of one spec: SVD and optimised factors at a fraction's ranks, on validation
    and test (the working copy and FP32's outcomes reused)."""

    def __init__(self, spec: "ModelSpec", seed: int, fit_options: dict[str, Any]) -> None:
        from cetopt.measure import Measurer
        from cetopt.theory.headline import _batches_accuracy

        self.spec, self.seed, self.fit_options, self.accuracy = spec, seed, fit_options, _batches_accuracy
        self.measurer = Measurer(spec)
        fp_model = self.measurer.model_with({})
        self.fp_val = _batches_accuracy(fp_model, spec.validation)
        self.fp = np.asarray(spec.test_outcomes(fp_model), dtype=np.float64)

    def __call__(self, fraction: float, ranks: dict[str, int]) -> tuple[CompactPoint, dict[str, np.ndarray]]:
        from cetopt.curvature.layers import layer_weight
        from cetopt.quant.lowrank import low_rank

        svd = {n: low_rank(layer_weight(self.spec.model, n).detach(), r).weight for n, r in ranks.items()}
        joint, fit = fit_factors(self.spec, ranks, **self.fit_options)
        seen: dict[str, Any] = {}
        for method, weights in (("svd", svd), ("joint", joint)):
            work = self.measurer.model_with(weights)
            seen[f"{method}_val_accuracy"] = self.accuracy(work, self.spec.validation)
            test = np.asarray(self.spec.test_outcomes(work), dtype=np.float64)
            seen[f"{method}_test"], seen[method] = float(test.mean()), test
            seen[f"{method}_val_dloss"] = float(self.measurer.validation_dloss(weights))
        outcomes = {m: seen.pop(m) for m in METHODS}
        return CompactPoint(fraction=fraction, ranks=ranks, packed_ratio=packed_ratio(self.spec, ranks),
                            svd_cal_loss=fit.svd_loss, joint_cal_loss=fit.loss, **seen,
                            joint_vs_svd=ci_dict(example_ci(outcomes["joint"], outcomes["svd"], seed=self.seed)),
                            joint_vs_fp=ci_dict(example_ci(outcomes["joint"], self.fp, seed=self.seed))), outcomes


def compact_walk(spec: "ModelSpec", fractions: Sequence[float] = FRACTIONS, *, model: str | None = None,
                 seed: int = 0, criterion: str = "accuracy", refine: int = REFINE,
                 fit_options: dict[str, Any] | None = None) -> CompactWalk:
    """Walk ``fractions`` (largest first) with truncated SVD and optimised factors (``fit_options``: steps, lr,
    slack of :func:`fit_factors`), measured on validation and test; then, per method and criterion (so the other
    criterion's reading has its own boundary too), ``refine`` bisection steps between its smallest lossless
    fraction (or the largest one that factorises nothing) and the next measured fraction below; each method's
    smallest lossless model under ``criterion`` chosen on validation (:func:`choose`).

    Raises:
        ProblemError: no validation batches or per-example test outcomes, an unknown criterion, no fraction.
    """
    if not spec.validation:
        raise ProblemError(f"{spec.name} has no validation batches: the compact form chooses on them",
                           field="validation")
    if spec.test_outcomes is None:
        raise ProblemError(f"{spec.name} has no per-example test outcomes (ModelSpec.test_outcomes)",
                           field="test_outcomes")
    if criterion not in CRITERIA:
        raise ProblemError(f"criterion must be one of {CRITERIA}, got {criterion!r}", field="criterion")
    if not fractions or refine < 0:
        raise ProblemError(f"give at least one rank fraction and refine >= 0, got {list(fractions)}, {refine}",
                           field="fractions")
    measure = _PointMeasurer(spec, seed, dict(fit_options or {}))
    measured: dict[tuple[tuple[str, int], ...], tuple[CompactPoint, dict[str, np.ndarray]]] = {}
    skipped: list[float] = []

    def at(fraction: float) -> CompactPoint | None:
        """The point at ``fraction`` (measured once per distinct ranks); None when it factorises nothing."""
        ranks = ranks_at(spec, fraction)
        if not ranks:
            skipped.append(fraction)
            return None
        key = tuple(sorted(ranks.items()))
        if key not in measured:
            measured[key] = measure(fraction, ranks)
        return measured[key][0]

    for fraction in sorted((float(f) for f in fractions), reverse=True):
        at(fraction)
    for method, rule in ((m, c) for m in METHODS for c in CRITERIA):  # each reading bisects its own boundary
        points = sorted((p for p, _ in measured.values()), key=lambda p: -p.fraction)
        index = choose(points, method, measure.fp_val, rule)
        high = points[index].fraction if index is not None else min(
            (f for f in skipped if not points or f > points[0].fraction), default=1.0)
        below = [p.fraction for p in points if p.fraction < high]
        low = max(below) if below else None
        for _ in range(refine if low is not None else 0):
            mid = round((high + low) / 2, 6)
            point = at(mid)
            if point is None or is_lossless(point, method, measure.fp_val, rule):
                high = mid
            else:
                low = mid
    return _walk(spec, model, seed, criterion, measure, list(measured.values()), skipped)


def _walk(spec: "ModelSpec", model: str | None, seed: int, criterion: str, measure: _PointMeasurer,
          measured: list[tuple[CompactPoint, dict[str, np.ndarray]]], skipped: list[float]) -> CompactWalk:
    """The walk's record: points largest fraction first, each method's choice and its paired CIs."""
    measured = sorted(measured, key=lambda item: -item[0].fraction)
    points = tuple(p for p, _ in measured)
    fp = measure.fp
    chosen = {m: choose(points, m, measure.fp_val, criterion) for m in METHODS}
    out = {m: fp if chosen[m] is None else measured[chosen[m]][1][m] for m in METHODS}
    return CompactWalk(model=model or spec.name, seed=seed, criterion=criterion, fp_val_accuracy=measure.fp_val,
                       fp_test=float(fp.mean()), points=points, skipped=tuple(sorted(set(skipped), reverse=True)),
                       joint_chosen=chosen["joint"], svd_chosen=chosen["svd"],
                       joint_vs_fp=ci_dict(example_ci(out["joint"], fp, seed=seed)),
                       svd_vs_fp=ci_dict(example_ci(out["svd"], fp, seed=seed)),
                       joint_vs_svd=ci_dict(example_ci(out["joint"], out["svd"], seed=seed)))


@dataclass(frozen=True)
class CompactVerdict:
    """The compact form judged on one model over seeds, under one lossless criterion.

    Attributes:
        joint_ratio_mean, svd_ratio_mean: mean chosen packed ratio of each method (1 where it chose nothing).
        found: seeds on which the optimised factors are lossless on validation at some fraction.
        size_gain, size_gain_low, size_gain_high: mean over seeds of joint ratio / SVD ratio (= SVD's packed size /
            the optimised factors' packed size; > 1: the optimised lossless model is smaller) and its t-interval.
        accuracy: (chosen optimised model - FP32) test accuracy, paired by seed; svd_accuracy: the same for SVD.
        smaller: the size gain's interval lies above 1.
    """

    model: str
    criterion: str
    verdict: Verdict
    n_seeds: int
    found: int
    joint_ratio_mean: float
    svd_ratio_mean: float
    size_gain: float
    size_gain_low: float
    size_gain_high: float
    accuracy: SeedDifference
    svd_accuracy: SeedDifference
    smaller: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return verdict_dict(self, ("accuracy", "svd_accuracy"))


def judge_compact(walks: Sequence[CompactWalk], criterion: str | None = None, *,
                  margin: float = MARGIN) -> CompactVerdict:
    """The compact form's claim on one model: optimised factors give a smaller lossless model than truncated SVD
    chosen the same way, and that model keeps FP accuracy on the test set. ``criterion``: re-choose every walk
    under it (None: each walk's own).

    - fail: on no seed is any fraction lossless with optimised factors (the compact form compresses nothing), or
      SVD's lossless model is significantly smaller, or the chosen model loses test accuracy beyond the margin;
    - pass: significantly smaller than SVD's and FP test accuracy held;
    - partial: one of the two;
    - inconclusive: neither established nor refuted (intervals too wide, or < 2 seeds).

    Raises:
        ValueError: no walks, or walks of several models.
    """
    from cetopt.stats import seed_summary

    if not walks:
        raise ValueError("walks: at least one seed's walk is needed")
    models = sorted({w.model for w in walks})
    if len(models) != 1:
        raise ValueError(f"walks: one model at a time, got {models}")
    criterion = criterion or walks[0].criterion
    joint = [w.ratio("joint", criterion) for w in walks]
    svd = [w.ratio("svd", criterion) for w in walks]
    gain = seed_summary(np.asarray(joint) / np.asarray(svd))
    accuracy = seed_difference([w.test("joint", criterion) for w in walks], [w.fp_test for w in walks],
                               margin=margin)
    svd_accuracy = seed_difference([w.test("svd", criterion) for w in walks], [w.fp_test for w in walks],
                                   margin=margin)
    found = sum(w.index("joint", criterion) is not None for w in walks)
    several = len(walks) > 1
    smaller, larger = several and gain.low > 1, several and gain.high < 1
    held = accuracy.outcome is Accuracy.HELD
    where = (f"optimised lossless model {gain.mean:.3f}x [{gain.low:.3f}, {gain.high:.3f}] smaller than SVD's "
             f"(packed x {np.mean(joint):.3f} vs {np.mean(svd):.3f}), test accuracy vs FP32 {accuracy.describe()}")
    if found == 0:
        verdict, reason = Verdict.FAIL, f"no rank fraction is lossless on validation with optimised factors: {where}"
    elif larger or accuracy.outcome is Accuracy.DROP:
        verdict = Verdict.FAIL
        reason = ("truncated SVD's lossless model is smaller: " if larger else
                  "the chosen model loses test accuracy: ") + where
    else:
        verdict, reason = graded_verdict(smaller, held, "smaller than SVD's lossless model",
                                         "not significantly smaller than SVD's lossless model", where)
    return CompactVerdict(model=models[0], criterion=criterion, verdict=verdict, n_seeds=len(walks), found=found,
                          joint_ratio_mean=float(np.mean(joint)), svd_ratio_mean=float(np.mean(svd)),
                          size_gain=gain.mean, size_gain_low=float(gain.low), size_gain_high=float(gain.high),
                          accuracy=accuracy, svd_accuracy=svd_accuracy, smaller=smaller, reason=reason)

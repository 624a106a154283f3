"""CET's headline (arXiv 2502.15802: "on the ResNet-34 model, CET achieves nearly 11x parameter compression while
even surpassing performance comparable to the original model"), tested as far as offline data allow.

Per model and seed: the default pipeline (``build_for`` with the frozen recipe's cost model, candidate widths and
grid; exact ``dp``) solved at every average-bits budget of a grid; each plan applied and measured; the plan with
the largest packed ratio (cetopt.quant.pack, the one packed-size definition) whose VALIDATION accuracy is >= the
FP32 model's is chosen; its TEST accuracy is compared with FP32's, per seed (paired bootstrap over test examples,
or over their sources) and over seeds (paired t-interval, cetopt.theory.seed_verdicts). The test set plays no part
in the choice.

"Accuracy" is the spec's own metric (:class:`WalkMetric`): a zoo classifier's accuracy, or a pretrained model's
fidelity to FP32 (MobileNetV2's top-1 agreement, MiniLM's cosine), where FP32 scores 1 by definition and "at FP"
means within :data:`FIDELITY_TOLERANCE` of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cetopt.errors import ProblemError
from cetopt.theory.report import Verdict
from cetopt.theory.seed_verdicts import (MARGIN, Accuracy, SeedDifference, ci_dict, seed_difference,
                                         verdict_dict)

if TYPE_CHECKING:
    from cetopt.modelspec import ModelSpec

CLAIM_RATIO = 11.0  # "nearly 11x"
NEARLY = 10.0  # the ratio that counts as "nearly 11x": the claim rounded down to a whole ratio
# average bits from 8 down to 2 (the default candidates' extremes) in steps of 1/8 bit
BUDGETS = tuple(float(b) for b in np.arange(8.0, 1.999, -0.125))


@dataclass(frozen=True)
class BudgetPoint:
    """One plan of the walk: the dp optimum at ``budget_bits`` average bits, applied and measured.

    Attributes:
        budget_bits: the budget asked for; avg_bits: what the plan uses (quantised weights only).
        packed_ratio: FP32 size / packed size of the whole model (codes, scales, other parameters, buffers).
        weight_ratio: 32 / avg_bits (the quantised weights alone, no scales).
        validation_accuracy, test_accuracy: fractions.
        bits: layer -> bit-width.
    """

    budget_bits: float
    avg_bits: float
    packed_ratio: float
    weight_ratio: float
    validation_accuracy: float
    test_accuracy: float
    bits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedWalk:
    """One model and seed: its FP32 accuracies, every plan of the walk, and the chosen plan.

    Attributes:
        chosen: index into ``points`` of the largest packed ratio with validation accuracy >= FP32's (None: no
            plan keeps it, so the model stays FP32 at ratio 1).
        first_drop: index of the last plan before validation first falls below FP32, walking down from the
            largest budget (a more conservative reading; None when the first plan already falls).
        test_ci: the chosen plan's paired bootstrap CI of (plan - FP32) test accuracy over test examples (over
            their sources when the spec names them, ``ModelSpec.test_clusters``).
        metric: what the "accuracies" measure (:class:`WalkMetric`'s name; "accuracy" for the zoo classifiers).
        tolerance: how far below FP32's validation metric a plan may score and still count as "at FP" (0 for a
            task metric, :data:`FIDELITY_TOLERANCE` for a fidelity one).
    """

    model: str
    seed: int
    fp_validation_accuracy: float
    fp_test_accuracy: float
    points: tuple[BudgetPoint, ...]
    chosen: int | None
    first_drop: int | None
    test_ci: dict[str, float] | None = None
    metric: str = "accuracy"
    tolerance: float = 0.0

    @property
    def chosen_ratio(self) -> float:
        return 1.0 if self.chosen is None else self.points[self.chosen].packed_ratio

    @property
    def chosen_test_accuracy(self) -> float:
        return self.fp_test_accuracy if self.chosen is None else self.points[self.chosen].test_accuracy

    @property
    def ceiling_ratio(self) -> float:
        """The largest packed ratio the walk reached (the smallest budget's plan)."""
        return max((p.packed_ratio for p in self.points), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chosen_ratio": self.chosen_ratio, "chosen_test_accuracy": self.chosen_test_accuracy,
                "ceiling_ratio": self.ceiling_ratio}


@dataclass(frozen=True)
class HeadlineVerdict:
    """The claim judged on one model over its seeds.

    Attributes:
        ratio_mean, ratio_low, ratio_high: chosen packed ratio over seeds, t-interval.
        accuracy: (chosen plan - FP32) test accuracy, paired by seed.
        ceiling_mean: mean over seeds of the largest ratio the candidates reach at all.
        reason: the verdict in a sentence.
    """

    model: str
    verdict: Verdict
    n_seeds: int
    ratio_mean: float
    ratio_low: float
    ratio_high: float
    ceiling_mean: float
    accuracy: SeedDifference
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return verdict_dict(self)


def select_at_fp(points: Sequence[BudgetPoint], fp_validation: float) -> int | None:
    """Index of the plan with the largest packed ratio whose validation accuracy is >= ``fp_validation`` (ties:
    the higher validation accuracy, then the earlier plan); None when none is."""
    best: int | None = None
    for i, p in enumerate(points):
        if p.validation_accuracy + 1e-12 < fp_validation:
            continue
        if best is None or (p.packed_ratio, p.validation_accuracy) > (points[best].packed_ratio,
                                                                      points[best].validation_accuracy):
            best = i
    return best


def first_drop(points: Sequence[BudgetPoint], fp_validation: float) -> int | None:
    """Index of the last plan before the first whose validation accuracy falls below ``fp_validation``, walking
    ``points`` in order (largest budget first); None when the first already falls."""
    last = None
    for i, p in enumerate(points):
        if p.validation_accuracy + 1e-12 < fp_validation:
            break
        last = i
    return last


def labelled(batches: Sequence[Any]) -> bool:
    """True when there are batches and each is (inputs tensor, int64 labels of shape (n,)): what
    :func:`_batches_accuracy` scores."""
    import torch

    return bool(batches) and all(
        isinstance(b, (tuple, list)) and len(b) == 2 and isinstance(b[0], torch.Tensor)
        and isinstance(b[1], torch.Tensor) and b[1].dtype == torch.int64 and b[1].dim() == 1 for b in batches)


def _batches_accuracy(model: Any, batches: Sequence[Any]) -> float:
    """Accuracy (fraction) of a classifier on labelled (inputs, labels) batches, eval mode."""
    import torch

    from cetopt.curvature.operator import eval_mode

    correct = total = 0
    with torch.no_grad(), eval_mode(model):
        for inputs, labels in batches:
            correct += int((model(inputs).argmax(dim=1) == labels).sum())
            total += int(len(labels))
    return correct / total


# "at FP accuracy" for a fidelity metric (agreement or cosine with FP32's own outputs): FP32 scores 1 by definition,
# so no plan can be ">= FP"; a plan is kept when its validation metric is >= 1 - this (5 points of agreement, or a
# mean cosine of 0.95), and the chosen plan's test metric may fall this far below FP32's before the claim fails
FIDELITY_TOLERANCE = 0.05
# metric names (the first key of ModelSpec.evaluate) that measure fidelity to FP32 rather than the task
FIDELITY_METRICS = ("top1_agreement", "agreement", "cosine", "cosine_mean")


@dataclass(frozen=True)
class WalkMetric:
    """What the walk scores plans by, on the validation batches, and how close to FP32 counts as "at FP".

    Attributes:
        name: the spec's headline metric (the first key of ``ModelSpec.evaluate``: "accuracy" for the zoo's
            classifiers, "top1_agreement" for MobileNetV2, "cosine_mean" for MiniLM); the test side is
            ``test_outcomes``, the same metric per example.
        validation: how the validation batches are scored: "labels" (accuracy against their int64 labels;
            MobileNetV2's are FP32's own top-1, so this is agreement), "fidelity" (a spec bound to the fidelity
            objective: agreement or cosine to the recorded FP32 outputs, cetopt.losses.fidelity_metrics) or
            "cosine loss" (1 - the mean validation loss, the mean cosine to FP32 when the loss is 1 - cosine, as
            MiniLM's distillation loss is).
        tolerance: 0 for a task metric (a plan must score >= FP32); :data:`FIDELITY_TOLERANCE` for a fidelity one.
    """

    name: str
    validation: str
    tolerance: float

    def score(self, spec: "ModelSpec", model: Any) -> float:
        """The validation metric of ``model`` (a fraction; higher is better)."""
        from cetopt.losses import fidelity_metrics, headline
        from cetopt.measure import mean_loss

        if self.validation == "labels":
            return _batches_accuracy(model, spec.validation)
        if self.validation == "fidelity":
            kind = spec.loss_fn.kind  # type: ignore[union-attr]  # a bound fidelity objective names its kind
            return fidelity_metrics(model, spec.validation, kind)[headline(kind)]
        return 1.0 - mean_loss(spec, model, spec.validation)


def walk_metric(spec: "ModelSpec", fp_model: Any) -> WalkMetric:
    """The :class:`WalkMetric` of ``spec`` (``fp_model``: its FP32 model, evaluated once for the metric's name).

    Raises:
        ProblemError: no validation batches, no per-example test outcomes, or unlabelled validation batches that
            no fidelity to FP32 scores (nothing to pick a plan 'at FP accuracy' by).
    """
    if not spec.validation:
        raise ProblemError(f"{spec.name} has no validation batches: the headline picks its plan on them",
                           field="validation")
    if spec.test_outcomes is None:
        raise ProblemError(f"{spec.name} has no per-example test outcomes (ModelSpec.test_outcomes): the headline "
                           "compares the test metric with paired CIs", field="test_outcomes")
    name = next(iter(spec.metrics(fp_model)), "accuracy")
    fidelity = name in FIDELITY_METRICS or spec.fidelity
    if labelled(spec.validation):
        return WalkMetric(name, "labels", FIDELITY_TOLERANCE if fidelity else 0.0)
    if spec.fidelity:
        return WalkMetric(name, "fidelity", FIDELITY_TOLERANCE)
    if name.startswith("cosine"):
        return WalkMetric(name, "cosine loss", FIDELITY_TOLERANCE)
    raise ProblemError(f"{spec.name}'s validation batches are not (inputs, int64 labels) and its metric {name!r} is "
                       "not a fidelity to FP32 that they can score: nothing to pick a plan 'at FP accuracy' by; give "
                       "labelled validation batches", field="validation")


def walk_budgets(spec: "ModelSpec", budgets: Sequence[float] = BUDGETS, *, model: str | None = None,
                 seed: int = 0) -> SeedWalk:
    """The default pipeline's dp plans of ``spec`` at each of ``budgets`` (average bits, largest first), measured
    on the validation batches (:func:`walk_metric`) and the test set; the plan kept at FP32's validation metric
    (within the metric's tolerance) chosen, and its paired test CI taken by source when the spec names them
    (``ModelSpec.paired_ci``).

    Raises:
        ProblemError: as :func:`walk_metric`.
    """
    from cetopt.measure import Measurer
    from cetopt.problem.model import Budget
    from cetopt.quant.pack import model_packed_size
    from cetopt.quant.plan import plan_from_result
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    measurer = Measurer(spec)
    fp_model = measurer.model_with({})
    metric = walk_metric(spec, fp_model)
    budgets = sorted((float(b) for b in budgets), reverse=True)
    built = build_for(spec, budget=Budget(avg_bits=budgets[0]))
    fp_val = metric.score(spec, fp_model)
    fp_outcomes = np.asarray(spec.test_outcomes(fp_model), dtype=np.float64)
    points, outcomes = [], []
    for b in budgets:
        result = solve(built.problem.with_budget(Budget(avg_bits=b)), "dp")
        if not result.success:
            continue
        plan = plan_from_result(built.problem, result)
        work = measurer.model_with(built.weights_for_choices(dict(result.choices)))
        test = np.asarray(spec.test_outcomes(work), dtype=np.float64)
        outcomes.append(test)
        points.append(BudgetPoint(budget_bits=b, avg_bits=float(result.avg_bits),
                                  packed_ratio=float(model_packed_size(spec.model, plan).ratio),
                                  weight_ratio=32.0 / float(result.avg_bits),
                                  validation_accuracy=metric.score(spec, work),
                                  test_accuracy=float(test.mean()), bits=dict(result.bits)))
    chosen = select_at_fp(points, fp_val - metric.tolerance)
    ci = None if chosen is None else ci_dict(spec.paired_ci(outcomes[chosen], fp_outcomes, seed=seed))
    return SeedWalk(model=model or spec.name, seed=seed, fp_validation_accuracy=fp_val,
                    fp_test_accuracy=float(fp_outcomes.mean()), points=tuple(points), chosen=chosen,
                    first_drop=first_drop(points, fp_val - metric.tolerance), test_ci=ci, metric=metric.name,
                    tolerance=metric.tolerance)


def judge_headline(walks: Sequence[SeedWalk], *, nearly: float = NEARLY, margin: float = MARGIN) -> HeadlineVerdict:
    """The claim "nearly 11x at FP accuracy" judged on one model's seeds. For a fidelity metric (FP32 scores 1 by
    definition) the chosen plans' test metric is compared with FP32's less the walks' tolerance
    (:data:`FIDELITY_TOLERANCE`): "at FP" means within it.

    - fail: the chosen plans' test accuracy is significantly below FP32 by a plausible margin (:data:`MARGIN`);
    - inconclusive: the accuracy interval is too wide (or < 2 seeds), or accuracy held up to the largest ratio the
      candidates reach at all and that ceiling is below ``nearly`` (the ratio part was not testable);
    - pass: accuracy held and the mean chosen ratio >= ``nearly``;
    - partial: accuracy held (or fell by less than the margin) only at a lower ratio, or reached the ratio with a
      small significant drop.

    Raises:
        ValueError: no walks, or walks of several models.
    """
    from cetopt.stats import seed_summary

    if not walks:
        raise ValueError("walks: at least one seed's walk is needed")
    models = {w.model for w in walks}
    if len(models) != 1:
        raise ValueError(f"walks: one model at a time, got {sorted(models)}")
    ratios = np.array([w.chosen_ratio for w in walks])
    ratio = seed_summary(ratios)
    ceiling = float(np.mean([w.ceiling_ratio for w in walks]))
    # a fidelity metric is compared with FP32's score less the tolerance (FP32 scores 1 by definition); 0 otherwise
    accuracy = seed_difference([w.chosen_test_accuracy for w in walks],
                               [w.fp_test_accuracy - w.tolerance for w in walks], margin=margin)
    at_ceiling = all(w.chosen is not None and w.chosen_ratio >= w.ceiling_ratio - 1e-9 for w in walks)
    tolerance = max(w.tolerance for w in walks)
    where = (f"mean chosen ratio {ratio.mean:.2f}x (ceiling of the candidates {ceiling:.2f}x)"
             + (f"; {walks[0].metric} compared with FP32's less the fidelity tolerance {tolerance:g}"
                if tolerance else ""))
    if accuracy.outcome is Accuracy.DROP:
        verdict, reason = Verdict.FAIL, (f"the plans kept at FP32 validation accuracy lose test accuracy "
                                         f"significantly ({accuracy.describe()}), and the interval reaches past the "
                                         f"{margin * 100:g}-point margin; {where}")
    elif accuracy.outcome is Accuracy.UNCLEAR:
        verdict, reason = Verdict.INCONCLUSIVE, (f"the test-accuracy interval {accuracy.describe()} is too wide to "
                                                 f"say whether FP accuracy holds; {where}")
    elif ratio.mean >= nearly:
        verdict = Verdict.PASS if accuracy.outcome is Accuracy.HELD else Verdict.PARTIAL
        reason = (f"{where} >= {nearly:g}x at test accuracy {accuracy.describe()}"
                  + ("" if verdict is Verdict.PASS else f" (significantly below FP32, within {margin * 100:g} points)"))
    elif at_ceiling and ceiling < nearly:
        verdict, reason = Verdict.INCONCLUSIVE, (f"FP accuracy held up to the largest ratio the candidates reach "
                                                 f"({ceiling:.2f}x < {nearly:g}x): the ratio part is out of reach of "
                                                 f"this candidate set; test accuracy {accuracy.describe()}")
    else:
        verdict, reason = Verdict.PARTIAL, (f"FP accuracy holds only up to {where}, below {nearly:g}x; test "
                                            f"accuracy {accuracy.describe()}")
    return HeadlineVerdict(model=next(iter(models)), verdict=verdict, n_seeds=len(walks), ratio_mean=float(ratio.mean),
                           ratio_low=float(ratio.low), ratio_high=float(ratio.high), ceiling_mean=ceiling, accuracy=accuracy,
                           reason=reason)

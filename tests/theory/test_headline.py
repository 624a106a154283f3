"""CET's headline check can fail: the plan choice against brute force, the verdict rule fed a false case of each
kind, and a real walk on a zoo model whose validation set is too small to protect accuracy (verdict fail)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cetopt.theory.headline import BudgetPoint, SeedWalk, first_drop, judge_headline, select_at_fp, walk_budgets
from cetopt.theory.report import Verdict


def _point(ratio: float, val: float, test: float = 0.97) -> BudgetPoint:
    return BudgetPoint(budget_bits=32 / ratio, avg_bits=32 / ratio, packed_ratio=ratio, weight_ratio=ratio,
                       validation_accuracy=val, test_accuracy=test)


@given(st.lists(st.tuples(st.floats(1, 20), st.sampled_from([0.9, 0.95, 1.0])), min_size=1, max_size=8))
def test_selection_is_the_largest_ratio_at_fp_validation(pairs: list[tuple[float, float]]) -> None:
    points = [_point(r, v) for r, v in pairs]
    chosen = select_at_fp(points, 0.95)
    keeping = [p.packed_ratio for p in points if p.validation_accuracy >= 0.95]
    if not keeping:
        assert chosen is None
    else:
        assert points[chosen].packed_ratio == max(keeping)


def test_first_drop_stops_at_the_first_fall() -> None:
    points = [_point(4, 1.0), _point(6, 1.0), _point(8, 0.9), _point(10, 1.0)]
    assert first_drop(points, 1.0) == 1
    assert select_at_fp(points, 1.0) == 3  # the largest ratio keeps validation, past a fall
    assert first_drop([_point(4, 0.9)], 1.0) is None


def _walk(seed: int, ratio: float, test: float, fp_test: float = 0.97, ceiling: float = 14.0) -> SeedWalk:
    points = (_point(ratio, 1.0, test), _point(ceiling, 0.5, 0.3)) if ceiling > ratio else (_point(ratio, 1.0, test),)
    return SeedWalk(model="m", seed=seed, fp_validation_accuracy=1.0, fp_test_accuracy=fp_test, points=points,
                    chosen=0, first_drop=0)


def test_verdicts_of_the_headline() -> None:
    held = [0.970, 0.972, 0.969, 0.971, 0.970]
    assert judge_headline([_walk(s, 12, t) for s, t in enumerate(held)]).verdict is Verdict.PASS
    # false case: the ratio is reached but test accuracy falls by ~5 points on every seed
    drop = judge_headline([_walk(s, 12, t - 0.05) for s, t in enumerate(held)])
    assert drop.verdict is Verdict.FAIL and "lose test accuracy" in drop.reason
    # FP accuracy kept, but only at 6x
    assert judge_headline([_walk(s, 6, t) for s, t in enumerate(held)]).verdict is Verdict.PARTIAL
    # FP accuracy kept at the candidates' ceiling, and the ceiling is below the claim: the ratio was not testable
    capped = judge_headline([_walk(s, 7, t, ceiling=7) for s, t in enumerate(held)])
    assert capped.verdict is Verdict.INCONCLUSIVE and "out of reach" in capped.reason
    # scattered accuracies: too wide to say
    wide = [0.90, 0.99, 0.93, 0.99, 0.92]
    assert judge_headline([_walk(s, 12, t) for s, t in enumerate(wide)]).verdict is Verdict.INCONCLUSIVE
    # one seed: never a pass
    assert judge_headline([_walk(0, 12, 0.97)]).verdict is Verdict.INCONCLUSIVE


def test_no_plan_at_fp_validation_means_ratio_one() -> None:
    walk = SeedWalk(model="m", seed=0, fp_validation_accuracy=1.0, fp_test_accuracy=0.97,
                    points=(_point(8, 0.9),), chosen=None, first_drop=None)
    assert walk.chosen_ratio == 1.0 and walk.chosen_test_accuracy == 0.97


def test_judge_refuses_mixed_models() -> None:
    a, b = _walk(0, 12, 0.97), dataclasses.replace(_walk(1, 12, 0.97), model="other")
    with pytest.raises(ValueError, match="one model"):
        judge_headline([a, b])


def test_a_real_walk_with_a_one_example_validation_set_fails() -> None:
    """digits-mlp, three shipped seeds: with one validation example the all-2-bit plan keeps 'FP validation accuracy',
    is chosen, and loses 5-9 test points: the check must say fail. The measured numbers are checked against an
    independent evaluation of the same plans."""
    from cetopt.modelspec import load_model_spec
    from cetopt.zoo.digits import accuracy

    torch.set_num_threads(1)
    walks = []
    for seed in (0, 1, 2):  # two seeds leave a t interval with one degree of freedom: too wide to fail anything
        spec = load_model_spec("digits-mlp", seed=seed)
        x, y = spec.validation[0]
        tiny = dataclasses.replace(spec, validation=[(x[:1], y[:1])])
        walk = walk_budgets(tiny, (8.0, 2.0), seed=seed)
        assert [p.budget_bits for p in walk.points] == [8.0, 2.0]
        assert walk.points[1].bits == dict.fromkeys(walk.points[1].bits, 2)  # the 2-bit budget: every layer at 2
        assert walk.chosen == 1  # the largest ratio that kept the one validation example
        # packed size counted here: 2-bit codes in whole bytes and a float32 scale per output row of each Linear
        # weight; biases at 32 bits; the MLP has no buffers
        weights = [m.weight for m in spec.model.modules() if isinstance(m, torch.nn.Linear)]
        packed = sum(8 * -(-w.numel() * 2 // 8) + 32 * w.shape[0] for w in weights)
        packed += 32 * (sum(p.numel() for p in spec.model.parameters()) - sum(w.numel() for w in weights))
        fp32 = 32 * sum(p.numel() for p in spec.model.parameters())
        assert walk.points[1].packed_ratio == pytest.approx(fp32 / packed)
        assert walk.fp_test_accuracy == pytest.approx(spec.metrics()["accuracy"], abs=1e-6)
        assert walk.fp_validation_accuracy == accuracy(spec.model, x[:1], y[:1])
        walks.append(walk)
    verdict = judge_headline(walks)
    assert verdict.verdict is Verdict.FAIL
    assert verdict.accuracy.high < 0
    assert verdict.ratio_mean == pytest.approx(np.mean([w.points[1].packed_ratio for w in walks]))


def _agreement_spec() -> object:
    """A 10-16-4 MLP whose batches are labelled by its own FP32 top-1 and whose metric is top-1 agreement with
    FP32 (MobileNetV2's form): FP32 scores 1 by definition."""
    from torch import nn

    from cetopt.modelspec import ModelSpec
    from cetopt.zoo.specs import ce_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(384, 10)
    with torch.no_grad():
        top1 = model(x).argmax(dim=1)
    cal, val, test = (slice(0, 128), slice(128, 256), slice(256, 384))

    def agreement(m: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return (m(x[test]).argmax(dim=1) == top1[test]).double().numpy()

    return ModelSpec(name="agree", model=model, calibration=[(x[cal], top1[cal])], loss_fn=ce_loss,
                     evaluate=lambda m: {"top1_agreement": float(agreement(m).mean())}, test_outcomes=agreement,
                     validation=[(x[val], top1[val])])


def test_a_fidelity_metric_is_walked_within_its_tolerance() -> None:
    """With agreement as the metric no plan can beat FP32's 1.0: the walk keeps plans within FIDELITY_TOLERANCE of
    it, and the chosen plan is the largest ratio whose validation agreement (recomputed here) is >= 1 - tolerance."""
    from cetopt.measure import Measurer
    from cetopt.theory.headline import FIDELITY_TOLERANCE, walk_metric

    torch.set_num_threads(1)
    spec = _agreement_spec()
    metric = walk_metric(spec, Measurer(spec).model_with({}))
    assert (metric.name, metric.validation, metric.tolerance) == ("top1_agreement", "labels", FIDELITY_TOLERANCE)
    walk = walk_budgets(spec, (8.0, 6.0, 4.0, 3.0, 2.0))
    assert walk.fp_validation_accuracy == 1.0 and walk.fp_test_accuracy == 1.0
    assert walk.metric == "top1_agreement" and walk.tolerance == FIDELITY_TOLERANCE
    keeping = [i for i, p in enumerate(walk.points) if p.validation_accuracy >= 1.0 - FIDELITY_TOLERANCE]
    assert walk.chosen == max(keeping, key=lambda i: walk.points[i].packed_ratio)
    assert any(p.validation_accuracy < 1.0 for p in walk.points)  # the grid reaches plans that disagree
    # the judge compares test agreement with FP32's less the tolerance: plans 3 points below FP32 keep "FP"
    held = [dataclasses.replace(_walk(s, 12, 0.97 + 0.001 * s, fp_test=1.0), tolerance=FIDELITY_TOLERANCE,
                                metric="top1_agreement") for s in range(5)]
    assert judge_headline(held).verdict is Verdict.PASS
    far = [dataclasses.replace(w, points=(_point(12, 1.0, 0.85 + 0.001 * w.seed), w.points[1])) for w in held]
    assert judge_headline(far).verdict is Verdict.FAIL  # 15 points below: past the tolerance and the margin


def test_a_task_metric_keeps_the_old_rule() -> None:
    """A zoo classifier is walked by accuracy with no tolerance, its per-seed CI over examples (no clusters)."""
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.theory.headline import walk_metric

    spec = load_model_spec("digits-mlp", seed=0)
    metric = walk_metric(spec, Measurer(spec).model_with({}))
    assert (metric.name, metric.validation, metric.tolerance) == ("accuracy", "labels", 0.0)
    assert spec.test_clusters is None  # so spec.paired_ci is the example-level bootstrap the walk used before


def test_unlabelled_validation_of_a_task_metric_is_refused() -> None:
    from cetopt.errors import ProblemError
    from cetopt.theory.headline import walk_metric

    spec = dataclasses.replace(_agreement_spec(), evaluate=lambda m: {"mse": 0.0})
    spec = dataclasses.replace(spec, validation=[torch.randn(8, 10)])
    with pytest.raises(ProblemError, match="not a fidelity") as err:
        walk_metric(spec, spec.model)
    assert err.value.field == "validation"


def test_unlabelled_fidelity_specs_are_scored_by_agreement_or_cosine() -> None:
    """An inputs-only spec (bound to the fidelity objective) is scored by agreement with FP32 on its validation
    batches; a MiniLM-like spec (own 1 - cosine loss, cosine metric) by 1 - its loss, the mean cosine. FP32 scores
    1 on both, and a perturbed model scores what an independent computation gives."""
    from torch import nn

    from cetopt.measure import Measurer
    from cetopt.modelspec import ModelSpec
    from cetopt.theory.headline import FIDELITY_TOLERANCE, walk_metric

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(96, 6)
    bound = ModelSpec(name="bound", model=model, calibration=[x[:32]], validation=[x[32:64]], test=[x[64:]])
    metric = walk_metric(bound, Measurer(bound).model_with({}))
    assert (metric.name, metric.validation, metric.tolerance) == ("agreement", "fidelity", FIDELITY_TOLERANCE)
    assert metric.score(bound, model) == 1.0
    other = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        expected = float((other(x[32:64]).argmax(1) == model(x[32:64]).argmax(1)).double().mean())
    assert metric.score(bound, other) == pytest.approx(expected)

    def embed(m: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(m(inputs), dim=1)

    with torch.no_grad():
        targets = [embed(model, x[i:i + 32]) for i in (0, 32, 64)]
    cosine = ModelSpec(name="cos", model=model, calibration=[(x[:32], targets[0])],
                       loss_fn=lambda m, b: (1.0 - (embed(m, b[0]) * b[1]).sum(dim=1)).mean(),
                       evaluate=lambda m: {"cosine_mean": 1.0}, test_outcomes=lambda m: np.ones(32),
                       validation=[(x[32:64], targets[1])])
    metric = walk_metric(cosine, model)
    assert (metric.name, metric.validation) == ("cosine_mean", "cosine loss")
    assert metric.score(cosine, model) == pytest.approx(1.0)
    with torch.no_grad():
        expected = float((embed(other, x[32:64]) * targets[1]).sum(dim=1).mean())
    assert metric.score(cosine, other) == pytest.approx(expected)

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

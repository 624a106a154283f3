"""Joint low-rank's compact form can fail: the choice against brute force, the verdict rule fed walks where the claim
is false (SVD's lossless model smaller, the chosen model losing test accuracy, nothing lossless), and a real walk on
the digits MLP whose SVD points are re-measured independently."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.theory.lowrank_compact import (CompactPoint, CompactWalk, choose, compact_walk, is_lossless,
                                           judge_compact)
from cetopt.theory.report import Verdict

CI = {"estimate": 0.0, "low": 0.0, "high": 0.0, "n": 100}


def _point(fraction: float, ratio: float, *, joint_val: float = 1.0, svd_val: float = 1.0, joint_test: float = 0.97,
           svd_test: float = 0.97, joint_dloss: float = 0.01, svd_dloss: float = 0.02) -> CompactPoint:
    return CompactPoint(fraction=fraction, ranks={"a": 1}, packed_ratio=ratio, svd_cal_loss=1.0, joint_cal_loss=0.5,
                        svd_val_accuracy=svd_val, joint_val_accuracy=joint_val, svd_val_dloss=svd_dloss,
                        joint_val_dloss=joint_dloss, svd_test=svd_test, joint_test=joint_test, joint_vs_svd=CI,
                        joint_vs_fp=CI)


def _walk(seed: int, points: list[CompactPoint], fp_test: float = 0.97, model: str = "m") -> CompactWalk:
    return CompactWalk(model=model, seed=seed, criterion="accuracy", fp_val_accuracy=1.0, fp_test=fp_test,
                       points=tuple(points), skipped=(), joint_chosen=choose(points, "joint", 1.0),
                       svd_chosen=choose(points, "svd", 1.0), joint_vs_fp=CI, svd_vs_fp=CI, joint_vs_svd=CI)


@given(st.lists(st.tuples(st.floats(1, 5), st.sampled_from([0.98, 1.0]), st.floats(-0.1, 0.1)), min_size=1,
                max_size=8), st.sampled_from(["joint", "svd"]), st.sampled_from(["accuracy", "loss"]))
def test_choice_is_the_largest_lossless_ratio(triples: list[tuple[float, float, float]], method: str,
                                               criterion: str) -> None:
    points = [_point(0.5, r, joint_val=v, svd_val=v, joint_dloss=d, svd_dloss=d) for r, v, d in triples]
    keeping = [p.packed_ratio for p in points if (p.joint_val_accuracy >= 1.0 if criterion == "accuracy"
                                                  else p.joint_val_dloss <= 0)]
    chosen = choose(points, method, 1.0, criterion)
    assert (chosen is None) if not keeping else points[chosen].packed_ratio == max(keeping)


def test_verdicts_of_the_compact_form() -> None:
    jitter = [0.0, 0.002, -0.002, 0.001, 0.0]

    def walks(joint_small: bool, svd_small: bool, joint_test: float = 0.97) -> list[CompactWalk]:
        """Two points a seed: 1.1x lossless for both, 1.5x lossless for the methods named (test accuracy there
        ``joint_test``)."""
        return [_walk(s, [_point(0.8, 1.1 + j), _point(0.5, 1.5 + j, joint_val=1.0 if joint_small else 0.9,
                                                       svd_val=1.0 if svd_small else 0.9,
                                                       joint_test=joint_test + j)]) for s, j in enumerate(jitter)]

    good = judge_compact(walks(True, False))
    assert good.verdict is Verdict.PASS and good.smaller and good.size_gain > 1.3 and good.found == 5
    # false cases: SVD's lossless model is the smaller; the chosen model loses test accuracy; nothing lossless
    assert judge_compact(walks(False, True)).verdict is Verdict.FAIL
    assert judge_compact(walks(True, False, joint_test=0.90)).verdict is Verdict.FAIL
    nothing = [_walk(s, [_point(0.5, 1.5, joint_val=0.9, svd_val=0.9)]) for s in range(3)]
    assert judge_compact(nothing).verdict is Verdict.FAIL and judge_compact(nothing).found == 0
    # same size for both, FP accuracy held: half the claim
    assert judge_compact(walks(True, True)).verdict is Verdict.PARTIAL
    assert judge_compact(walks(True, False)[:1]).verdict is Verdict.INCONCLUSIVE  # one seed
    # the loss criterion re-chooses from the recorded points: validation loss rose everywhere, nothing chosen
    assert judge_compact(walks(True, False), "loss").verdict is Verdict.FAIL
    with pytest.raises(ValueError, match="one model"):
        judge_compact([_walk(0, [_point(0.5, 1.5)]), _walk(1, [_point(0.5, 1.5)], model="other")])
    with pytest.raises(ValueError, match="criterion"):
        is_lossless(_point(0.5, 1.5), "joint", 1.0, "agreement")


def _accuracy(model: torch.nn.Module, batches: list) -> float:
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return right / sum(len(y) for _, y in batches)


def test_a_real_walk_chooses_on_validation_and_measures_svd_right() -> None:
    """digits-mlp at two fractions, 3 steps, one bisection step: every SVD point re-measured by an independent
    truncated SVD of each layer, the choice checked against brute force, the optimised loss never above SVD's."""
    from cetopt.modelspec import load_model_spec

    torch.set_num_threads(1)
    spec = load_model_spec("digits-mlp", seed=0)
    walk = compact_walk(spec, (0.5, 0.8), seed=0, refine=1, fit_options={"steps": 3})
    fractions = [p.fraction for p in walk.points]
    assert fractions == sorted(fractions, reverse=True) and {0.8, 0.5} <= set(fractions) | set(walk.skipped)
    ratios = [p.packed_ratio for p in walk.points]
    assert ratios == sorted(ratios) and ratios[0] > 1  # smaller fraction, smaller model
    fp = copy.deepcopy(spec.model).eval()
    assert walk.fp_val_accuracy == _accuracy(fp, spec.validation)
    for p in walk.points:
        assert p.joint_cal_loss <= p.svd_cal_loss
        work = copy.deepcopy(spec.model).eval()
        for name, rank in p.ranks.items():
            layer = dict(work.named_modules())[name]
            u, s, vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
            layer.weight.data.copy_(((u[:, :rank] * s[:rank]) @ vh[:rank]).float())
        assert p.svd_val_accuracy == _accuracy(work, spec.validation)
        assert p.svd_test == pytest.approx(float(np.mean(spec.test_outcomes(work))), abs=1e-12)
    for method in ("joint", "svd"):
        lossless = [p.packed_ratio for p in walk.points if p.__getattribute__(f"{method}_val_accuracy")
                    >= walk.fp_val_accuracy]
        assert walk.ratio(method) == (max(lossless) if lossless else 1.0)
        if walk.index(method) is None:
            assert walk.test(method) == walk.fp_test
    with pytest.raises(ProblemError, match="criterion"):
        compact_walk(spec, (0.5,), criterion="agreement")

"""LLC's automatic rank check can fail: the rank rule on hand-made scans, the verdict fed false cases, the scan's
numbers against an independent float64 double backward and direct forward passes, and a real plan that truncates
every layer to rank 1 (verdict fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cetopt.theory.llc_rank import (LayerScan, LlcSeedRun, RankPlan, RankPoint, judge_llc, measure_rank_plan,
                                    plan_ranks, scan_ranks)
from cetopt.theory.report import Verdict


def _pt(rank: int, predicted: float, measured: float, saves: bool = True) -> RankPoint:
    return RankPoint(rank=rank, size_bits=rank, saves=saves, linear=predicted, quadratic=0.0, predicted=predicted,
                     measured=measured)


def test_rank_rule_is_the_smallest_saving_rank_inside() -> None:
    scan = LayerScan("a", 4, 4, (_pt(1, 0.3, 0.2), _pt(2, -0.1, 0.1), _pt(3, -0.2, -0.1, saves=False)))
    assert scan.lossless_rank("predicted") == 2
    assert scan.lossless_rank("measured") is None  # rank 3 is inside but stores more than the dense weight
    assert scan.inside_ranks("measured") == [3]
    assert plan_ranks([scan, LayerScan("b", 2, 2, (_pt(1, 0.5, 0.5),))], "predicted") == {"a": 2}


def _run(seed: int, test: float, ranks: dict[str, int] | None = None, fp: float = 0.97,
         calibration: float = -1e-6) -> LlcSeedRun:
    plan = RankPlan(reading="predicted", ranks={"a": 2} if ranks is None else ranks, packed_ratio=1.2,
                    predicted=-1e-5, calibration_dloss=calibration, validation_dloss=1e-6, test_accuracy=test,
                    test_ci={"estimate": test - fp, "low": 0.0, "high": 0.0, "n": 100})
    return LlcSeedRun(model="m", seed=seed, fp_test_accuracy=fp, layers=(), plans={"predicted": plan})


def test_verdicts_of_the_rank_rule() -> None:
    held = [0.970, 0.971, 0.970, 0.969, 0.970]
    assert judge_llc([_run(s, t) for s, t in enumerate(held)]).verdict is Verdict.PASS
    # false case: the rule's plans lose ~4 points on every seed
    assert judge_llc([_run(s, t - 0.04) for s, t in enumerate(held)]).verdict is Verdict.FAIL
    # accuracy held, but the combined plan raises the calibration loss LLC promises not to raise
    raised = judge_llc([_run(s, t, calibration=1e-4 if s < 2 else -1e-6) for s, t in enumerate(held)])
    assert raised.verdict is Verdict.PARTIAL and "2 of the 5" in raised.reason
    # nothing factorised on any seed: the claim was not tested
    nothing = judge_llc([_run(s, 0.97, ranks={}) for s in range(5)])
    assert nothing.verdict is Verdict.INCONCLUSIVE and "not tested" in nothing.reason
    with pytest.raises(ValueError, match="reading"):
        judge_llc([_run(0, 0.97)], "guessed")


def test_scan_matches_double_backward_and_forward_passes() -> None:
    """digits-mlp's last layer (10 x 64): each rank's g.d, d'Hd and measured change, computed here without
    cetopt's curvature code (autograd gradient, float64 double backward, forward passes)."""
    import copy

    from double_backward import exact_form

    from cetopt.modelspec import load_model_spec
    from cetopt.quant.lowrank import low_rank

    torch.set_num_threads(1)
    spec = load_model_spec("digits-mlp", seed=0)
    (scan,) = scan_ranks(spec, layers=["fc3"])
    model, batches = spec.model.eval(), spec.calibration
    weight = model.fc3.weight.detach()
    assert [p.rank for p in scan.points] == list(range(1, 10))
    assert [p.saves for p in scan.points] == [r * (10 + 64) < 10 * 64 for r in range(1, 10)]

    def loss_at(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, {"fc3.weight": w}, (x,)), y)

    def mean_loss(w: torch.Tensor) -> float:
        with torch.no_grad():
            return float(np.mean([float(loss_at(w, x, y)) for x, y in batches]))

    grads = []
    for x, y in batches:
        w = weight.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(loss_at(w, x, y), w)[0].double())
    g = torch.stack(grads).mean(0)
    base = mean_loss(weight)
    model64 = copy.deepcopy(model).double()

    def ce(forward, batch):  # noqa: ANN001, ANN202 - the reference's callback
        x, y = batch
        return torch.nn.functional.cross_entropy(forward(x.double()), y)

    for point in scan.points[::2]:
        truncated = low_rank(weight, point.rank).weight
        d = truncated.double() - weight.double()
        assert point.linear == pytest.approx(float((g * d).sum()), rel=1e-4, abs=1e-9)
        assert point.quadratic == pytest.approx(exact_form(model64, "fc3.weight", weight.double(), d, batches, ce),
                                                rel=1e-3, abs=1e-9)
        assert point.predicted == pytest.approx(point.linear + 0.5 * point.quadratic)
        assert point.measured == pytest.approx(mean_loss(truncated) - base, rel=1e-3, abs=1e-6)


def test_a_real_plan_that_truncates_every_layer_to_rank_one_fails() -> None:
    """The verdict on measured plans whose ranks lie far outside the neighbourhood (rank 1 everywhere): the
    digits MLP collapses on every seed, and the check must say fail."""
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec

    torch.set_num_threads(1)
    runs = []
    for seed in (0, 1, 2):
        spec = load_model_spec("digits-mlp", seed=seed)
        measurer = Measurer(spec)
        fp = np.asarray(spec.test_outcomes(measurer.model_with({})), dtype=np.float64)
        plan = measure_rank_plan(spec, (), {"fc1": 1, "fc2": 1, "fc3": 1}, "predicted", fp_outcomes=fp,
                                 measurer=measurer)
        assert plan.packed_ratio > 1 and plan.test_ci["high"] < 0
        runs.append(LlcSeedRun(model="digits-mlp", seed=seed, fp_test_accuracy=float(fp.mean()), layers=(),
                               plans={"predicted": plan}))
    assert judge_llc(runs).verdict is Verdict.FAIL

"""FP=xINT's checks can fail: each judge is fed a false case (a series whose terms do not shrink, an
operation that is not commutative, accuracy below or only equal to FP) and the per-model checks run on a
small classifier."""

from __future__ import annotations

import torch
from torch import nn

from cetopt.modelspec import ModelSpec
from cetopt.quant.abelian import ADD, GroupOp, add_identity, check_group_axioms
from cetopt.theory.report import Verdict
from cetopt.theory.xint import (judge_above_fp, judge_axioms, judge_convergence, judge_granularity,
                                measure_expansions, xint_checks)
from cetopt.zoo.specs import ce_loss


def test_convergence_fails_when_the_terms_do_not_shrink() -> None:
    assert judge_convergence([0.5, 0.5, 0.5], [0.3, 0.1, 0.05, 0.01])[0] is Verdict.PASS
    assert judge_convergence([0.5, 1.0, 0.5], [0.3, 0.3, 0.3, 0.3])[0] is Verdict.FAIL  # a term removes nothing
    assert judge_convergence([0.5, 0.95], [0.3, 0.2, 0.1])[0] is Verdict.FAIL  # shrinks, but slower than 0.9
    assert judge_convergence([0.5, 0.5], [0.3, 0.4, 0.1])[0] is Verdict.PARTIAL  # output error rises once
    assert judge_convergence([0.5], [float("nan"), 0.1])[0] is Verdict.INCONCLUSIVE


def test_a_series_with_a_non_contracting_term_fails_on_measured_numbers() -> None:
    # a "series" of K terms each of which re-rounds the ORIGINAL weight (not the residual): the terms do not
    # shrink and the sum K x Q(W) diverges from W; the judge must say fail
    from cetopt.quant.quantizers import fake_quantize

    w = torch.randn(16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    residual, rates, errors = w.clone(), [], []
    total = torch.zeros_like(w)
    for _ in range(4):
        term = fake_quantize(w, 3)  # the bug under test: w instead of residual
        total = total + term
        new = w - total
        rates.append(float(new.norm() / residual.norm()))
        errors.append(float(new.norm() / w.norm()))
        residual = new
    assert judge_convergence(rates[1:], errors)[0] is Verdict.FAIL


def test_axioms_judge_fails_on_a_non_commutative_operation() -> None:
    g = torch.Generator().manual_seed(1)
    samples = [{"w": torch.randn(3, 3, generator=g, dtype=torch.float64)} for _ in range(3)]
    assert judge_axioms([check_group_axioms(ADD, samples)])[0] is Verdict.PASS
    matmul = GroupOp("matmul", lambda a, b: {k: a[k] @ b[k] for k in a}, add_identity, lambda a: dict(a))
    verdict, note = judge_axioms([check_group_axioms(ADD, samples), check_group_axioms(matmul, samples)])
    assert verdict is Verdict.FAIL and "matmul" in note and "commutativity" in note


def test_above_fp_needs_the_interval_above_zero() -> None:
    assert judge_above_fp([0.01, 0.02, 0.015, 0.012, 0.018])[0] is Verdict.PASS
    assert judge_above_fp([-0.01, -0.02, -0.015, -0.012, -0.018])[0] is Verdict.FAIL
    assert judge_above_fp([0.0] * 5)[0] is Verdict.FAIL  # equal to FP is not above it
    verdict, summary = judge_above_fp([0.01, -0.01, 0.003, 0.0, -0.002])
    assert verdict is Verdict.INCONCLUSIVE and summary.low < 0 < summary.high and summary.n_seeds == 5
    assert judge_above_fp([0.05])[0] is Verdict.INCONCLUSIVE
    assert judge_above_fp([0.0056] * 5)[0] is Verdict.INCONCLUSIVE  # zero spread: a degenerate interval
    assert judge_granularity([1e-7], [1e-7])[0] is Verdict.PASS
    assert judge_granularity([1e-2], [1e-7])[0] is Verdict.FAIL


def _spec() -> ModelSpec:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(96, 6, generator=g)
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # labels the network gets right: FP accuracy 1
    return ModelSpec(name="tiny", model=net, calibration=[(x[:48], y[:48])], validation=[(x[48:], y[48:])],
                     loss_fn=ce_loss)


def test_per_model_checks_pass_on_a_small_classifier() -> None:
    results, points = xint_checks(_spec(), bits=(2, 4), terms=(1, 2, 3))
    assert [r.verdict for r in results] == [Verdict.PASS] * 3, [(r.title, r.notes) for r in results]
    assert {(p.bits, p.terms) for p in points} == {(b, k) for b in (2, 4) for k in (1, 2, 3)}
    at = {(p.bits, p.terms): p for p in points}
    assert at[(4, 3)].output_rel_error < at[(4, 1)].output_rel_error
    assert at[(2, 2)].plain_accuracy is not None and at[(4, 3)].bits_per_weight == 12
    # the independent computation: plain 4-bit accuracy = the K=1, b=4 expansion's (one term is plain RTN)
    assert at[(2, 2)].plain_accuracy == at[(4, 1)].accuracy


def test_checks_on_unlabelled_batches_are_inconclusive_not_an_error() -> None:
    net = nn.Linear(4, 2)
    spec = ModelSpec(name="inputs-only", model=net, calibration=[torch.randn(8, 4)])
    results, points = xint_checks(spec)
    assert points == [] and results[0].verdict is Verdict.INCONCLUSIVE


def test_measure_expansions_reports_fp_scores() -> None:
    spec = _spec()
    x, y = spec.validation[0]
    (acc, loss), points = measure_expansions(spec.model, x, y, bits=(3,), terms=(1,))
    assert acc == 1.0 and loss > 0 and len(points) == 1


def test_checks_expand_only_the_specs_layers() -> None:
    spec = _spec()
    restricted = ModelSpec(name="tiny-first", model=spec.model, calibration=spec.calibration,
                           validation=spec.validation, loss_fn=ce_loss, layers=("0",))
    results, points = xint_checks(restricted, bits=(2,), terms=(1, 2))
    full = {p.terms: p for p in xint_checks(spec, bits=(2,), terms=(1, 2))[1]}
    assert [r.verdict for r in results] == [Verdict.PASS] * 3
    # the last layer stays FP32, so the expansion's weight error is the first layer's alone and differs
    assert all(p.weight_rel_error != full[p.terms].weight_rel_error for p in points)

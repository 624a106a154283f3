"""Check 8 against exact truth: on two independent least-squares heads the loss is exactly quadratic in the weights
and block-diagonal over the layers, so plain cet's g.d + 1/2 d'Hd equals every plan's measured change: Spearman 1
and every sign right. The verdict rule is checked on its own (it can fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.theory.report import Verdict


class TwoHeads(nn.Module):
    """y = [A x, B x] with separate targets: loss block-diagonal and exactly quadratic in (A, B)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3, bias=False)
        self.b = nn.Linear(4, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


def _context():  # type: ignore[no-untyped-def]
    from cetopt.curvature.extract import CurvatureSettings
    from cetopt.modelspec import ModelSpec
    from cetopt.theory.context import ProofContext

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TwoHeads()
    x = torch.randn(96, 4, generator=gen)
    y = model(x).detach() + 0.3 * torch.randn(96, 5, generator=gen)
    spec = ModelSpec(name="two-heads", model=model, calibration=[(x[:48], y[:48]), (x[48:], y[48:])],
                     loss_fn=lambda m, b: ((m(b[0]) - b[1]) ** 2).sum(dim=1).mean())
    return ProofContext.create(spec, settings=CurvatureSettings(k=2, lanczos_iterations=6, max_probes=16,
                                                                 min_probes=4, device="cpu"))


def test_exact_quadratic_loss_is_predicted_exactly_by_cet() -> None:
    from cetopt.theory.plan_prediction import check_plan_prediction

    result = check_plan_prediction(_context())
    assert result.number == 8 and result.data["split"] == "calibration"  # the spec has no validation batches
    measured = np.array(result.data["measured"])
    cet = np.array(result.data["predicted"]["cet"])
    np.testing.assert_allclose(cet, measured, rtol=1e-3, atol=1e-6)  # float32 forward passes
    assert result.data["spearman"]["cet"] == pytest.approx(1.0)
    assert result.data["sign_agreement"]["cet"] == 1.0
    assert len(result.data["plans"]) >= 8 and result.verdict in set(Verdict)


@pytest.mark.parametrize("spearman, sign, expected", [(0.95, 1.0, Verdict.PASS), (0.95, 0.9, Verdict.PARTIAL),
                                                      (0.5, 1.0, Verdict.FAIL), (float("nan"), 1.0,
                                                                                 Verdict.INCONCLUSIVE)])
def test_verdict_rule(spearman: float, sign: float, expected: Verdict) -> None:
    from cetopt.theory.plan_prediction import _verdict

    assert _verdict(spearman, sign) is expected


def test_a_sign_counts_only_out_of_the_noise() -> None:
    from cetopt.theory.plan_prediction import _determined

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(400)
    assert _determined(noise + 1.0)  # mean 1, standard error 0.05
    assert not _determined(noise - noise.mean() + 0.01)  # mean 0.01, standard error 0.05
    assert not _determined(np.array([5.0]))  # one example has no standard error


def test_per_example_changes_average_to_the_measured_change() -> None:
    from cetopt.measure import Measurer
    from cetopt.theory.plan_prediction import check_plan_prediction

    ctx = _context()
    measurer = Measurer(ctx.task)
    weights = {"a": ctx.task.model.a.weight.detach() + 0.05, "b": ctx.task.model.b.weight.detach() * 0.9}
    per_example = measurer.per_example_dloss(weights, "calibration")
    assert per_example.shape == (96,)
    # two batches of 48 with a mean loss each: the mean over examples is the mean over batches
    assert per_example.mean() == pytest.approx(measurer.calibration_dloss(weights), rel=1e-5)
    result = check_plan_prediction(ctx)
    assert len(result.data["determined"]) == len(result.data["plans"])
    assert result.data["sign_agreement_determined"] == 1.0  # exact quadratic: every sign right, noise or not


def test_batches_split_into_single_examples() -> None:
    from cetopt.errors import ProblemError
    from cetopt.measure import single_examples

    x, y = torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2])
    pairs = single_examples((x, y))
    assert len(pairs) == 3 and torch.equal(pairs[1][0], x[1:2]) and torch.equal(pairs[1][1], y[1:2])
    dicts = single_examples({"input_ids": x, "labels": y, "name": "kept"})
    assert dicts[2]["labels"].tolist() == [2] and dicts[2]["name"] == "kept"
    assert [t.tolist() for t in single_examples(x)] == [[[0.0, 1.0]], [[2.0, 3.0]], [[4.0, 5.0]]]
    with pytest.raises(ProblemError, match="first dimensions"):
        single_examples((x, torch.zeros(4)))


def test_cost_models_of_one_context_share_their_quadratic_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """prove builds cet, cet-shrink, cet-nograd (...) on one model: the Hessian products are paid once, and a
    shared form gives the very problem an unshared build gives."""
    from cetopt.builders import signals
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.workflow import build_for

    ctx = _context()
    calls = []
    real = signals.quadratic_forms
    monkeypatch.setattr(signals, "quadratic_forms", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = ctx.built("cet").problem
    shrink = ctx.built("cet-shrink").problem
    nograd = ctx.built("cet-nograd").problem
    assert len(calls) == 1
    ctx.built("cet", interactions=True)  # cross terms are other products: computed, not mistaken for the own ones
    assert len(calls) == 2
    for method, problem in (("cet", first), ("cet-shrink", shrink), ("cet-nograd", nograd)):
        alone = build_for(ctx.task, bits=ctx.bits, method=method, settings=ctx.settings, curvature=ctx.curvature,
                          quantizer=QuantizerSpec()).problem  # the context's grid (the theory checks' plain grid)
        assert [c.loss for layer in problem.layers for c in layer.choices] == \
            [c.loss for layer in alone.layers for c in layer.choices]


def test_the_forms_key_sees_every_value_and_the_pairs() -> None:
    from cetopt.builders.signals import forms_key

    errors = {"a": [torch.zeros(2, 3), torch.ones(2, 3)]}
    changed = {"a": [torch.zeros(2, 3), torch.ones(2, 3).index_put_((torch.tensor([1]), torch.tensor([2])),
                                                                     torch.tensor(1.0001))]}
    assert forms_key(errors, []) == forms_key({"a": [t.clone() for t in errors["a"]]}, [])
    assert forms_key(errors, []) != forms_key(changed, [])
    assert forms_key(errors, []) != forms_key(errors, [("a", "b")])
    assert forms_key(errors, []) != forms_key({"b": errors["a"]}, [])


def test_theory_checks_price_the_plain_grid_and_check_8_the_default_one() -> None:
    """The checks of the theory's claims measure fake_quantize's plain grid, so their problems are priced there;
    check 8 judges the default pipeline on its grid (cetopt.workflow.DEFAULT_QUANTIZER)."""
    from cetopt.quant.plan import problem_quantizer
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.theory.plan_prediction import _built
    from cetopt.workflow import DEFAULT_QUANTIZER

    ctx = _context()
    assert problem_quantizer(ctx.built("cet").problem) == QuantizerSpec()
    assert problem_quantizer(_built(ctx, "cet").problem) == DEFAULT_QUANTIZER
    assert DEFAULT_QUANTIZER != QuantizerSpec()  # otherwise this test checks nothing

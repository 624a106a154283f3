"""Every check of `cetopt prove` can fail: each verdict rule is fed a case where its claim is false and must
say `fail`, and a case where its precondition does not hold and must say `inconclusive` (never `pass`)."""

from __future__ import annotations

import numpy as np
import pytest

from cetopt.theory.allocation import PlanMeasurement, compare, judge_allocation
from cetopt.theory.axes import judge_complementary, judge_major_axis
from cetopt.theory.lossless import judge_lossless, quantisation_errors
from cetopt.theory.prediction import judge_prediction
from cetopt.theory.report import Verdict
from cetopt.theory.spectra import Spectrum, classify_ends, confirms, judge_quadric_types


def test_check1_and_6_fail_when_prediction_does_not_track_measurement() -> None:
    rng = np.random.default_rng(0)
    pred, meas = rng.normal(size=40), rng.normal(size=40)  # unrelated: the expansion predicts nothing
    r = float(np.corrcoef(pred, meas)[0, 1])
    err = float(np.median(np.abs(pred - meas) / np.abs(meas)))
    assert judge_prediction(r, err) is Verdict.FAIL
    assert judge_prediction(0.99, 0.5) is Verdict.PARTIAL  # correlated but off in size: not a pass
    assert judge_prediction(float("nan"), 0.1) is Verdict.INCONCLUSIVE
    assert judge_prediction(0.99, 0.1) is Verdict.PASS


def _spectrum(lmin: float, emin: float, lmax: float = 1.0, emax: float = 1e-9, exact: bool = True) -> Spectrum:
    return Spectrum(lmin, emin, lmax, emax, exact, np.ones(3) / np.sqrt(3))


def test_check2_classifies_only_resolved_ends() -> None:
    assert classify_ends(_spectrum(0.2, 1e-9))[0] == "ellipsoid"
    assert classify_ends(_spectrum(-0.2, 1e-9))[0] == "hyperbolic_paraboloid"
    assert classify_ends(_spectrum(1e-12, 1e-12))[0] == "degenerate"
    # tiny but resolved (error far below |lambda_min|): positive definite, an elongated ellipsoid
    assert classify_ends(_spectrum(4e-8, 6e-15))[0] == "ellipsoid"
    # the case: lambda_min ~1e-6 far below a 1e-3 residual: unresolved, not "degenerate"
    assert classify_ends(_spectrum(1e-6, 1e-3))[0] == "unresolved"
    # Lanczos cannot prove positive definiteness (a Ritz value bounds lambda_min from above)
    assert classify_ends(_spectrum(0.2, 1e-9, exact=False))[0] == "unresolved"
    assert classify_ends(_spectrum(-0.2, 1e-9, exact=False))[0] == "hyperbolic_paraboloid"


def test_check2_fails_on_degenerate_layers_and_on_contradicting_measurements() -> None:
    degenerate = _spectrum(0.0, 1e-13)
    kind = classify_ends(degenerate)[0]
    assert kind == "degenerate" and confirms(kind, degenerate, 1e-12)
    assert judge_quadric_types([kind] * 3, [True] * 3)[0] is Verdict.FAIL
    ellipsoid = _spectrum(0.2, 1e-9)
    assert not confirms("ellipsoid", ellipsoid, -0.2)  # the loss curves down where H says up
    assert judge_quadric_types(["ellipsoid"] * 4, [False] * 4)[0] is Verdict.FAIL
    assert judge_quadric_types(["unresolved"] * 4, [False] * 4)[0] is Verdict.INCONCLUSIVE
    assert judge_quadric_types(["ellipsoid", "hyperbolic_paraboloid"], [True, True])[0] is Verdict.PASS


def test_check3_and_4_fail_when_the_order_is_wrong() -> None:
    assert judge_major_axis([False] * 5, [True] * 5)[0] is Verdict.FAIL
    assert judge_major_axis([], [])[0] is Verdict.INCONCLUSIVE
    assert judge_complementary([-0.5, 0.1, 0.0], [False, False, True])[0] is Verdict.FAIL
    # equal energies rank nothing: no evidence, not a perfect correlation
    assert judge_complementary([float("nan")] * 3, [True] * 3)[0] is Verdict.INCONCLUSIVE


def test_check5_fails_when_inside_errors_raise_the_loss_and_is_untested_without_any() -> None:
    assert judge_lossless([1e-3] * 10, noise=1e-6)[0] is Verdict.FAIL
    assert judge_lossless([-1e-4] * 10, noise=1e-6)[0] is Verdict.PASS
    assert judge_lossless([-1e-4] * 2, noise=1e-6)[0] is Verdict.INCONCLUSIVE


def test_check5_errors_are_grid_points() -> None:
    import torch

    from cetopt.quant.quantizers import fake_quantize

    w = torch.randn(6, 5, dtype=torch.float64)
    errors = quantisation_errors(w, 4, 5, np.random.default_rng(0))
    assert np.allclose(errors[0], (fake_quantize(w, 4) - w).numpy().ravel())
    scale = (w.abs().amax(dim=1, keepdim=True) / 7).numpy()
    for d in errors[1:]:
        codes = (w.numpy() + d.reshape(6, 5)) / scale
        assert np.allclose(codes, np.round(codes), atol=1e-9) and np.abs(codes).max() <= 7 + 1e-9


def _plan(label: str, measured: float, bits: dict[str, int]) -> PlanMeasurement:
    return PlanMeasurement(label, 3.0, 3.0, None, measured, 0.9, "optimal", bits=bits)


def test_check7_counts_ties_as_ties_and_fails_when_cet_loses() -> None:
    same = {"a": 3, "b": 3}
    assert compare(_plan("cet", 0.1, same), _plan("uniform", 0.1, same), 1e-9) == "tie"
    assert compare(_plan("cet", 0.1, same), _plan("hawq", 0.1 + 1e-12, {"a": 2, "b": 4}), 1e-9) == "tie"
    assert compare(_plan("cet", 0.2, same), _plan("hawq", 0.1, {"a": 2, "b": 4}), 1e-9) == "loss"
    assert judge_allocation(True, ["tie", "tie"]) is Verdict.INCONCLUSIVE  # same plans: nothing compared
    assert judge_allocation(True, ["loss", "loss", "win"]) is Verdict.FAIL
    assert judge_allocation(False, ["win", "win"]) is Verdict.FAIL  # solvers disagree
    assert judge_allocation(True, ["win", "tie"]) is Verdict.PASS




def _regression_context(duplicate_input: bool):  # type: ignore[no-untyped-def]
    """Least squares y ~ W x on a tiny linear layer: H = 2/N X'X (x) I exactly. A duplicated input column
    makes X'X singular: a flat direction, so the layer's quadric is degenerate and check 2's claim is false."""
    import torch
    from torch import nn

    from cetopt.curvature.extract import CurvatureSettings
    from cetopt.modelspec import ModelSpec
    from cetopt.theory.context import ProofContext

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen)
    if duplicate_input:
        x[:, 2] = x[:, 0]
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    y = model(x).detach() + 0.1 * torch.randn(64, 2, generator=gen)
    spec = ModelSpec(name="regression", model=model, calibration=[(x, y)],
                     loss_fn=lambda m, b: ((m(b[0]) - b[1]) ** 2).sum(dim=1).mean())
    return ProofContext.create(spec, settings=CurvatureSettings(k=2, lanczos_iterations=6, max_probes=16,
                                                                 min_probes=4, device="cpu"))


@pytest.mark.parametrize("duplicate, expected", [(True, Verdict.FAIL), (False, Verdict.PASS)])
def test_check2_end_to_end_on_a_model_with_known_hessian(duplicate: bool, expected: Verdict) -> None:
    from cetopt.theory.spectra import check_quadric_types

    result = check_quadric_types(_regression_context(duplicate))
    assert result.verdict is expected, result.notes
    assert result.data["kinds"] == ({"degenerate": 1} if duplicate else {"ellipsoid": 1})


def test_check2_without_dense_blocks_reads_the_lanczos_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """dense_max = 0 (large inputs) must never build a Hessian block; the 6-weight layer then reads its Lanczos
    ends, and a positive lowest Ritz value only bounds lambda_min from above: the layer stays unresolved (the
    dense block proves it an ellipsoid, test above), so the claim is untested rather than passed."""
    import dataclasses

    from cetopt.theory.context import ProofContext
    from cetopt.theory.spectra import check_quadric_types, layer_spectrum

    ctx = dataclasses.replace(_regression_context(False), dense_max=0)
    monkeypatch.setattr(ProofContext, "dense_hessian", lambda *a, **k: pytest.fail("dense block built"))
    assert not layer_spectrum(ctx, next(iter(ctx.quadrics))).exact
    result = check_quadric_types(ctx)
    assert result.data["kinds"] == {"unresolved": 1}, result.notes
    assert result.verdict is Verdict.INCONCLUSIVE and "Layers with <= 0 weights" in result.notes


def test_a_negative_dense_limit_is_refused() -> None:
    from cetopt.theory.context import ProofContext

    ctx = _regression_context(False)
    with pytest.raises(ValueError, match="dense_max"):
        ProofContext.create(ctx.task, settings=ctx.settings, dense_max=-1)


def test_the_cli_default_dense_limit_is_the_library_default() -> None:
    from cetopt.cli import build_parser
    from cetopt.theory.context import DENSE_MAX

    from cetopt.theory.lossless import VARIANTS

    args = build_parser().parse_args(["prove", "digits-mlp", "--out", "x"])
    assert args.dense_max == DENSE_MAX and args.lossless_variants == VARIANTS


def test_directional_curvature_is_the_exact_quadratic_form() -> None:
    """u'Hu against the closed form H = 2/N X'X per output row (W is (2, 3), flattened row-major)."""
    import numpy as np

    ctx = _regression_context(False)
    (name,) = ctx.quadrics
    x = ctx.task.calibration[0][0].double().numpy()
    gram = 2.0 / len(x) * x.T @ x
    directions = np.random.default_rng(0).normal(size=(4, 6))
    expected = [sum(u[3 * r:3 * r + 3] @ gram @ u[3 * r:3 * r + 3] for r in range(2)) for u in directions]
    np.testing.assert_allclose(ctx.directional_curvature(name, directions), expected, rtol=1e-5)

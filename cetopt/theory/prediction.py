"""Checks 1 and 6: the second-order expansion against measured loss changes, per layer and per plan."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cetopt.quant.quantizers import fake_quantize
from cetopt.theory.context import ProofContext
from cetopt.plotting import new_figure, predicted_vs_measured, save_figure
from cetopt.theory.report import CheckResult, Verdict

CORRELATION_MIN = 0.9
RELATIVE_ERROR_MAX = 0.25  # median |pred - meas| / |meas| at the bit-widths where the expansion should hold


def judge_prediction(correlation: float, relative_error: float) -> Verdict:
    """pass: r and error within tolerance; partial: r only; fail: r below; inconclusive: NaN (too few points)."""
    if not (np.isfinite(correlation) and np.isfinite(relative_error)):
        return Verdict.INCONCLUSIVE
    if correlation < CORRELATION_MIN:
        return Verdict.FAIL
    return Verdict.PASS if relative_error <= RELATIVE_ERROR_MAX else Verdict.PARTIAL


def _relative_error(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
    return np.abs(pred - meas) / np.maximum(np.abs(meas), 1e-12)


def check_per_layer_prediction(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None) -> CheckResult:
    """Check 1: each layer quantised alone, predicted g.d + 1/2 d'Hd (exact) vs the measured change."""
    problem = ctx.built("cet").problem
    rows, pred, meas, bits_of = [], [], [], []
    for layer in problem.layers:
        w = ctx.weights[layer.name]
        for choice in layer.choices:
            measured = ctx.dloss({layer.name: fake_quantize(w, choice.bits)})
            rows.append([layer.name, choice.bits, choice.loss, measured, float(_relative_error(
                np.array([choice.loss]), np.array([measured]))[0])])
            pred.append(choice.loss)
            meas.append(measured)
            bits_of.append(choice.bits)
    pred_a, meas_a, bits_a = np.array(pred), np.array(meas), np.array(bits_of)
    regime = bits_a >= 4  # where a second-order model can hold; lower widths are reported as breakdowns
    corr = float(np.corrcoef(pred_a[regime], meas_a[regime])[0, 1]) if regime.sum() > 2 else float("nan")
    corr_all = float(np.corrcoef(pred_a, meas_a)[0, 1])
    per_bits = {int(b): float(np.median(_relative_error(pred_a[bits_a == b], meas_a[bits_a == b])))
                for b in sorted(set(bits_of))}
    good_bits = [b for b in per_bits if b >= 4]
    worst_good = max(per_bits[b] for b in good_bits) if good_bits else float("nan")
    breakdown = [b for b, e in per_bits.items() if e > 2 * RELATIVE_ERROR_MAX]
    sign_agree = float(np.mean(np.sign(pred_a) == np.sign(meas_a)))
    verdict = judge_prediction(corr, worst_good)
    fig, ax = new_figure()
    predicted_vs_measured(ax, {f"{b} bits": (pred_a[bits_a == b], meas_a[bits_a == b]) for b in sorted(set(bits_of))},
                          xlabel="predicted dL = g.d + 1/2 d'Hd", title=f"{ctx.task.name}: one layer at a time")
    figures = save_figure(fig, outdir, "check1_prediction")
    notes = ("Median relative error per bit-width: " + ", ".join(f"{b} bits {e:.1%}" for b, e in per_bits.items())
             + f". Signs agree in {sign_agree:.0%} of cases (the gradient term makes some changes negative). Pearson r "
             f"over every bit-width, breakdowns included: {corr_all:.3f}.")
    if breakdown:
        notes += (f" The expansion breaks down at {', '.join(map(str, breakdown))} bits (median error > "
                  f"{2 * RELATIVE_ERROR_MAX:.0%}): the error is too large for a second-order model; higher-order "
                  "terms dominate, and the predicted change underestimates the measured one.")
    return CheckResult(
        1, "Second-order prediction, per layer",
        "dL(d) ~ g.d + 1/2 d'Hd predicts the measured loss change of quantising one layer.",
        "Pearson r (all layers, >= 4 bits); worst median relative error at >= 4 bits",
        f"r = {corr:.3f}; {worst_good:.1%}", f"r >= {CORRELATION_MIN}; <= {RELATIVE_ERROR_MAX:.0%}", verdict, notes,
        (["layer", "bits", "predicted", "measured", "rel. error"], rows), figures,
        {"correlation": corr, "correlation_all_bits": corr_all, "relative_error_by_bits": per_bits, "sign_agreement": sign_agree,
         "breakdown_bits": breakdown})


def _plans(ctx: ProofContext) -> dict[str, dict[str, int]]:
    from cetopt.solvers.api import solve

    names = ctx.curvature.names
    plans: dict[str, dict[str, int]] = {}
    for b in (3, 4, 6, 8):
        if b in ctx.bits:
            plans[f"uniform {b}"] = {n: b for n in names}
    for avg in (3.0, 4.0, 5.0):
        result = solve(ctx.built("cet", avg_bits=avg).problem, "dp")
        if result.success:
            plans[f"cet avg {avg:g}"] = dict(result.bits)
    rng = np.random.default_rng(0)
    usable = [b for b in ctx.bits if b >= 3]
    for i in range(4):
        plans[f"random {i}"] = {n: int(rng.choice(usable)) for n in names}
    return plans


def check_additivity(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None) -> CheckResult:
    """Check 6: the sum of per-layer predictions vs the measured change of a whole plan, without cross terms,
    with adjacent-layer cross terms, and with every cross term (one full Hessian-vector product)."""
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    own = ctx.built("cet").problem
    pairs = ctx.built("cet", interactions=True).problem
    rows = []
    values: dict[str, list[float]] = {"measured": [], "no_cross": [], "adjacent": [], "full": []}
    for label, bits in _plans(ctx).items():
        replaced = {n: fake_quantize(ctx.weights[n], b) for n, b in bits.items()}
        measured = ctx.dloss(replaced)
        no_cross = evaluate(own, choices_from_bits(own, bits)).loss
        adjacent = evaluate(pairs, choices_from_bits(pairs, bits)).loss
        linear, quad = ctx.full_quadratic({n: replaced[n] - ctx.weights[n] for n in bits})
        full = linear + 0.5 * quad
        for key, v in zip(values, (measured, no_cross, adjacent, full)):
            values[key].append(v)
        rows.append([label, measured, no_cross, adjacent, full])
    meas = np.array(values["measured"])
    stats = {}
    for key in ("no_cross", "adjacent", "full"):
        pred = np.array(values[key])
        stats[key] = (float(np.corrcoef(pred, meas)[0, 1]), float(np.median(_relative_error(pred, meas))))
    corr_sum, err_sum = stats["no_cross"]  # the block-diagonal sum: what the solver optimises
    verdict = judge_prediction(corr_sum, err_sum)
    fig, ax = new_figure()
    predicted_vs_measured(ax, {key.replace("_", " "): (values[key], meas) for key in ("no_cross", "adjacent", "full")},
                          xlabel="predicted dL of the plan", title=f"{ctx.task.name}: whole plans")
    figures = save_figure(fig, outdir, "check6_additivity")
    notes = "; ".join(f"{k.replace('_', ' ')}: r = {c:.3f}, median relative error {e:.1%}" for k, (c, e) in stats.items())
    notes += (". The verdict is judged on 'no cross', the block-diagonal sum the allocation problems optimise; "
              "the other two are shown for comparison: 'adjacent' adds d_a'H_ab d_b for "
              "the layer graph's neighbours (the interaction terms); 'full' is g.d + 1/2 d'Hd over the whole model.")
    data: dict[str, Any] = {"stats": stats, "values": values}
    return CheckResult(
        6, "Additivity over layers",
        "The loss change of a plan is the sum of the per-layer changes (block-diagonal Hessian), up to cross terms.",
        "Pearson r and median relative error of the block-diagonal sum of per-layer predictions (the solver's "
        "objective) vs the measured change, over plans",
        f"r = {corr_sum:.3f}; {err_sum:.1%}", f"r >= {CORRELATION_MIN}; <= {RELATIVE_ERROR_MAX:.0%}", verdict, notes,
        (["plan", "measured", "sum per layer", "+ adjacent cross", "full g.d + 1/2 d'Hd"], rows), figures, data)

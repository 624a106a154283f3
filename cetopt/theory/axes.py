"""Checks 3 and 4: the major-axis theorem and the complementary problem, each measured on the model
(perturbed weights, measured calibration loss). Check 2 lives in spectra.py, check 5 in lossless.py."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

from cetopt.quant.quantizers import fake_quantize
from cetopt.theory.context import ProofContext
from cetopt.plotting import new_figure, per_layer_bars, save_figure
from cetopt.theory.report import CheckResult, Verdict

ORDER_MIN = 0.8  # fraction of layers where bottom <= random <= top holds
SPEARMAN_MIN = 0.8
REFERENCE_BITS = 4


def _reference_error(ctx: ProofContext, name: str, bits: int = REFERENCE_BITS) -> np.ndarray:
    w = ctx.weights[name]
    return (fake_quantize(w, bits) - w).double().cpu().numpy().ravel()


def judge_major_axis(ordered: Sequence[bool], in_bounds: Sequence[bool]) -> tuple[Verdict, float, float]:
    """Check 3's verdict from per-layer outcomes: (verdict, ordered fraction, within-bounds fraction)."""
    if not ordered:
        return Verdict.INCONCLUSIVE, float("nan"), float("nan")
    frac, frac_bounds = float(np.mean(ordered)), float(np.mean(in_bounds))
    return (Verdict.PASS if frac >= ORDER_MIN and frac_bounds >= ORDER_MIN else Verdict.FAIL), frac, frac_bounds


def judge_complementary(rhos: Sequence[float], improved: Sequence[bool]) -> tuple[Verdict, float, float]:
    """Check 4's verdict: (verdict, median Spearman rho over layers with a ranking, improved fraction)."""
    finite = [r for r in rhos if np.isfinite(r)]
    if not finite or not improved:
        return Verdict.INCONCLUSIVE, float("nan"), float("nan")
    median_rho, frac_improved = float(np.median(finite)), float(np.mean(improved))
    verdict = Verdict.PASS if median_rho >= SPEARMAN_MIN and frac_improved >= ORDER_MIN else (
        Verdict.PARTIAL if median_rho >= SPEARMAN_MIN or frac_improved >= ORDER_MIN else Verdict.FAIL)
    return verdict, median_rho, frac_improved


def _symmetric_change(ctx: ProofContext, name: str, u: np.ndarray, r: float) -> float:
    """(L(W + r u) + L(W - r u)) / 2 - L(W): the curvature part of the change (the gradient term cancels)."""
    return 0.5 * (ctx.dloss(ctx.perturbed(name, u, r)) + ctx.dloss(ctx.perturbed(name, u, -r)))


def check_major_axis(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None, *, random_directions: int = 6,
                     seed: int = 0) -> CheckResult:
    """Check 3: at equal |d|, error along the bottom eigenvector raises the measured loss least, random
    directions more, the top eigenvector most; and the Rayleigh bounds hold."""
    rng = np.random.default_rng(seed)
    rows, ordered, within = [], 0, 0
    for name, q in ctx.quadrics.items():
        r = float(np.linalg.norm(_reference_error(ctx, name)))
        units = [q.major_axis, q.minor_axis]
        for _ in range(random_directions):
            u = rng.normal(size=q.n)
            units.append(u / np.linalg.norm(u))
        at_r = [_symmetric_change(ctx, name, u, r) for u in units]
        bottom, top, mean_random = at_r[0], at_r[1], float(np.mean(at_r[2:]))
        ok_order = bottom <= mean_random + 1e-12 and mean_random <= top + 1e-12
        # Rayleigh quotients from the measured second difference at a small radius (the quadratic regime)
        small = r / 64
        quotients = [2 * _symmetric_change(ctx, name, u, small) / small ** 2 for u in units]
        slack = 0.1 * max(abs(q.lambda_max), abs(q.lambda_min))
        ok_bounds = all(q.lambda_min - slack <= v <= q.lambda_max + slack for v in quotients)
        ordered += ok_order
        within += ok_bounds
        rows.append([name, r, bottom, mean_random, top, q.lambda_min, min(quotients), max(quotients), q.lambda_max,
                     "yes" if ok_order else "no", "yes" if ok_bounds else "no"])
    verdict, frac, frac_bounds = judge_major_axis([r[9] == "yes" for r in rows], [r[10] == "yes" for r in rows])
    fig, ax = new_figure(6.0, 3.6)
    per_layer_bars(ax, [row[0] for row in rows], {"bottom eigvec (major axis)": [row[2] for row in rows],
                                                 "random": [row[3] for row in rows], "top eigvec": [row[4] for row in rows]},
                   ylabel="measured symmetric dL at |d| = |d_4bit|")
    ax.set_title(f"{ctx.task.name}: error direction vs loss")
    figures = save_figure(fig, outdir, "check3_major_axis")
    return CheckResult(
        3, "Major-axis theorem",
        "At fixed |d|, the quadratic cost is least along the major axis (smallest eigenvalue) and most along "
        "the minor axis: 1/2 lambda_min r^2 <= 1/2 d'Hd <= 1/2 lambda_max r^2 (Rayleigh / Courant-Fischer).",
        "fraction of layers with measured bottom <= random <= top; fraction within the Rayleigh bounds",
        f"{frac:.0%}; {frac_bounds:.0%}", f">= {ORDER_MIN:.0%} each", verdict,
        "Ordering measured at r = |d_4bit| with the symmetric difference (L(W+ru)+L(W-ru))/2 - L(W), which cancels "
        "the gradient term. Rayleigh quotients 2 x that difference / r^2 measured at r/64 (the quadratic regime; at "
        "the full 4-bit radius higher-order terms exceed 1/2 lambda_max r^2 along the top eigenvector), allowed 10% "
        "of the largest |lambda| for float32 noise.",
        (["layer", "r = |d_4bit|", "bottom", "random (mean)", "top", "lambda_min", "min quotient", "max quotient",
          "lambda_max", "ordered", "in bounds"], rows), figures, {"ordered_fraction": frac, "bounds_fraction": frac_bounds})


def check_complementary(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None, *, variants: int = 16,
                        bits: int = 3, seed: int = 0) -> CheckResult:
    """Check 4: among errors of equal norm, the exact d'Hd ranks them as the complement-subspace energy does;
    and major-axis rounding (minimising that energy) lowers the measured loss vs round-to-nearest."""
    from cetopt.quant.rounding.major_axis import major_axis_round

    rng = np.random.default_rng(seed)
    rows, rhos, improved = [], [], []
    for name, q in ctx.quadrics.items():
        w = ctx.weights[name]
        d0 = _reference_error(ctx, name, bits)
        norm = float(np.linalg.norm(d0))
        rows_w = w.double().cpu().reshape(w.shape[0], -1)
        scale = (rows_w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)).expand_as(rows_w)
        step = scale.reshape(-1).numpy()  # the grid step of each weight (symmetric per-channel quantiser)
        far = d0 - np.sign(d0) * step  # the other grid neighbour of each weight
        family = [d0]
        for i in range(variants - 1):
            flip = rng.random(q.n) < (i + 1) / (2 * variants)  # more and more weights rounded the far way
            d = np.where(flip, far, d0)
            family.append(d / max(float(np.linalg.norm(d)), 1e-30) * norm)
        family_a = np.array(family)
        exact = ctx.directional_curvature(name, family_a)
        complement = np.array([q.complement_energy(d) for d in family_a])
        # equal exact energies (or equal complement energies) rank nothing: no evidence either way
        rho = float(spearmanr(exact, complement).statistic) if np.ptp(exact) > 0 and np.ptp(complement) > 0 \
            else float("nan")
        rhos.append(rho)
        rtn_loss = ctx.dloss({name: fake_quantize(w, bits)})
        major = major_axis_round(w, bits, q)
        major_loss = ctx.dloss({name: major.weight})
        improved.append(major_loss < rtn_loss)
        rows.append([name, rho, int(np.argmin(exact)) == int(np.argmin(complement)), rtn_loss, major_loss])
    verdict, median_rho, frac_improved = judge_complementary(rhos, improved)
    fig, ax = new_figure()
    per_layer_bars(ax, [r[0] for r in rows], {"round to nearest": [r[3] for r in rows],
                                             "major-axis rounding": [r[4] for r in rows]},
                   ylabel=f"measured dL, layer alone at {bits} bits", log=False)
    figures = save_figure(fig, outdir, "check4_complementary")
    return CheckResult(
        4, "The complementary problem",
        "Minimising dL at fixed |d| is minimising the curvature energy of d outside the major-axis subspace; "
        "rounding toward the major axes therefore lowers the loss.",
        f"median Spearman rho (exact d'Hd vs complement energy, {variants} equal-norm {bits}-bit errors per layer); "
        "fraction of layers where major-axis rounding beats round-to-nearest (measured)",
        f"{median_rho:.3f}; {frac_improved:.0%}", f"rho >= {SPEARMAN_MIN}; >= {ORDER_MIN:.0%}", verdict,
        "The complement energy uses the computed eigenpairs above the median and the mean remaining eigenvalue "
        "(cetopt.geometry.LayerQuadric.complement_energy); the exact d'Hd comes from Hessian-vector products.",
        (["layer", "Spearman rho", "same argmin", f"dL nearest ({bits} bits)", f"dL major-axis ({bits} bits)"], rows),
        figures, {"median_rho": median_rho, "improved_fraction": frac_improved})

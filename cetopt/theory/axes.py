"""Checks 2 to 5: the quadrics' kinds, the major-axis theorem, the complementary problem and the lossless
neighbourhood, each measured on the model (perturbed weights, measured calibration loss)."""

from __future__ import annotations

import os

import numpy as np
from scipy.stats import spearmanr

from cetopt.quant.quantizers import fake_quantize
from cetopt.theory.context import ProofContext
from cetopt.theory.plots import new_figure, per_layer_bars, save_figure
from cetopt.theory.report import CheckResult, Verdict

RESIDUAL_MAX = 0.05  # Lanczos: ||Hu - theta u|| / max|lambda|
ORDER_MIN = 0.8  # fraction of layers where bottom <= random <= top holds
SPEARMAN_MIN = 0.8
LOSSLESS_MIN = 0.95
REFERENCE_BITS = 4


def _reference_error(ctx: ProofContext, name: str, bits: int = REFERENCE_BITS) -> np.ndarray:
    w = ctx.weights[name]
    return (fake_quantize(w, bits) - w).double().cpu().numpy().ravel()


def check_quadric_types(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None) -> CheckResult:
    """Check 2: each layer's quadric kind, its extreme curvatures and the centre shift by the gradient."""
    rows, kinds, residuals = [], {}, []
    for layer in ctx.curvature.layers:
        q = ctx.quadrics[layer.name]
        eig = layer.eig
        scale = max(abs(q.lambda_max), abs(q.lambda_min), 1e-30)
        residual = float(max(eig.top_residuals.max(initial=0), eig.bottom_residuals.max(initial=0)) / scale)
        residuals.append(residual)
        d = _reference_error(ctx, layer.name)
        shift = float(np.linalg.norm(q.centre_shift()))
        kinds[q.kind.value] = kinds.get(q.kind.value, 0) + 1
        rows.append([layer.name, q.n, q.kind.value, q.lambda_min, q.lambda_max, q.rest, shift,
                     shift / max(float(np.linalg.norm(d)), 1e-30), residual])
    worst = max(residuals)
    verdict = Verdict.PASS if worst <= RESIDUAL_MAX else Verdict.FAIL
    fig, ax = new_figure()
    names = [r[0] for r in rows]
    ax.semilogy(range(len(rows)), [max(abs(r[4]), 1e-12) for r in rows], "^-", label="lambda_max")
    ax.semilogy(range(len(rows)), [max(abs(r[3]), 1e-12) for r in rows], "v-", label="|lambda_min|")
    ax.semilogy(range(len(rows)), [max(abs(r[5]), 1e-12) for r in rows], ".-", label="|mean rest|")
    ax.set_xticks(range(len(rows)), names, rotation=70, fontsize=6)
    ax.set_ylabel("curvature")
    ax.set_title(f"{ctx.task.name}: layer spectra")
    ax.legend(fontsize=7)
    figures = save_figure(fig, outdir, "check2_spectra")
    notes = (f"Kinds: {', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))} (judged on the computed "
             f"eigenvalues with rtol {next(iter(ctx.quadrics.values())).rtol:g}; 'degenerate' = near-zero "
             "curvature, typical of ReLU networks and over-parameterised layers, whose bottom eigenvalues vanish). "
             "The centre shift |H^+ g| is compared with the 4-bit error norm: a shift comparable to the error means "
             "the gradient term cannot be dropped (the model is not at a minimum of the calibration loss).")
    return CheckResult(
        2, "Layer quadric types and centre shift",
        "Per layer, the level sets of dL are ellipsoids (H positive definite) or hyperbolic paraboloids "
        "(indefinite); the gradient shifts their centre.",
        "largest relative Lanczos residual (the spectra the classification rests on)", f"{worst:.2e}",
        f"<= {RESIDUAL_MAX}", verdict, notes,
        (["layer", "n", "kind", "lambda_min", "lambda_max", "mean rest", "|centre shift|", "shift / |d_4bit|",
          "residual"], rows), figures, {"kinds": kinds, "max_residual": worst})


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
    n = len(rows)
    frac, frac_bounds = ordered / n, within / n
    verdict = Verdict.PASS if frac >= ORDER_MIN and frac_bounds >= ORDER_MIN else Verdict.FAIL
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
    from cetopt.quant.major_axis import major_axis_round

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
        rho = float(spearmanr(exact, complement).statistic) if np.ptp(exact) > 0 else 1.0
        rhos.append(rho)
        rtn_loss = ctx.dloss({name: fake_quantize(w, bits)})
        major = major_axis_round(w, bits, q)
        major_loss = ctx.dloss({name: major.weight})
        improved.append(major_loss < rtn_loss)
        rows.append([name, rho, int(np.argmin(exact)) == int(np.argmin(complement)), rtn_loss, major_loss])
    median_rho = float(np.median(rhos))
    frac_improved = float(np.mean(improved))
    verdict = Verdict.PASS if median_rho >= SPEARMAN_MIN and frac_improved >= ORDER_MIN else (
        Verdict.PARTIAL if median_rho >= SPEARMAN_MIN or frac_improved >= ORDER_MIN else Verdict.FAIL)
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


def check_lossless(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None, *, directions: int = 6,
                   seed: int = 0) -> CheckResult:
    """Check 5: perturbations inside the lossless radius 2|g.u|/u'Hu (g.u < 0) do not raise the measured
    loss; beyond about twice the radius they do."""
    rng = np.random.default_rng(seed)
    rows, inside, outside = [], [], []
    for name, q in ctx.quadrics.items():
        g_hat = q.gradient / max(float(np.linalg.norm(q.gradient)), 1e-30)
        dirs = []
        for i in range(directions):
            u = rng.normal(size=q.n)
            u /= np.linalg.norm(u)
            u = -g_hat * (i + 1) / directions + u  # from nearly random to nearly down the gradient
            dirs.append(u / np.linalg.norm(u))
        dirs_a = np.array(dirs)
        curv = ctx.directional_curvature(name, dirs_a)
        for u, k in zip(dirs_a, curv):
            rho = q.lossless_radius(u, float(k))
            if not np.isfinite(rho) or rho == 0:
                continue
            ins = [ctx.dloss(ctx.perturbed(name, u, t * rho)) for t in (0.25, 0.5, 0.75, 1.0)]
            out = ctx.dloss(ctx.perturbed(name, u, 2.5 * rho))
            inside.extend(ins)
            outside.append(out)
            rows.append([name, rho, max(ins), out])
    ins_a, out_a = np.array(inside), np.array(outside)
    scale = abs(ctx.base_loss) * 1e-6  # float32 evaluation noise of the mean loss
    frac_in = float(np.mean(ins_a <= scale)) if ins_a.size else float("nan")
    frac_out = float(np.mean(out_a > 0)) if out_a.size else float("nan")
    verdict = Verdict.PASS if frac_in >= LOSSLESS_MIN else Verdict.FAIL
    fig, ax = new_figure()
    ax.hist(ins_a, bins=30, alpha=0.7, label="inside (t <= rho)")
    ax.hist(out_a, bins=30, alpha=0.7, label="outside (t = 2.5 rho)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("measured dL")
    ax.legend(fontsize=7)
    figures = save_figure(fig, outdir, "check5_lossless")
    return CheckResult(
        5, "Lossless neighbourhood",
        "Inside the radius where the first-order term dominates (g.u < 0, |d| <= 2|g.u|/u'Hu), the loss does not rise.",
        "fraction of inside perturbations with measured dL <= 0 (float noise allowed); fraction rising at 2.5 rho",
        f"{frac_in:.0%}; {frac_out:.0%}", f">= {LOSSLESS_MIN:.0%} inside", verdict,
        f"Largest inside change {ins_a.max() if ins_a.size else float('nan'):.3g} (margin); directions mix a random "
        "unit vector with -g/|g| in growing proportion; curvature u'Hu exact from Hessian-vector products.",
        (["layer", "radius", "max dL inside", "dL at 2.5 radius"], rows), figures,
        {"inside_fraction": frac_in, "outside_rising_fraction": frac_out})

"""Check 2: each layer's quadric kind, classified only where both ends of its spectrum are resolved, and
confirmed against float64 finite differences of the measured loss.

Both ends must be resolved to classify: an end is resolved when its error is small relative to its own
eigenvalue (not to the largest one). Small layers (n <= DENSE_MAX) get their full Hessian block in float64
(error bound: the asymmetry of the computed block plus n eps |H|); larger layers keep Lanczos' Ritz values
and residuals. A Ritz value bounds the extreme eigenvalue from inside the spectrum, so Lanczos can prove a
saddle (theta_min + r < 0) or a near-zero curvature (|theta| + r <= rtol lambda_max) but not positive
definiteness; those layers are reported unresolved with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cetopt.theory.context import ProofContext
from cetopt.plotting import new_figure, save_figure
from cetopt.theory.report import CheckResult, Verdict

RESOLVE_REL = 0.05  # an end is resolved when its error <= 5% of |lambda| at that end
DEGENERATE_RTOL = 1e-6  # zero within an error below rtol x lambda_max: a flat direction (degenerate quadric)
CONFIRM_REL = 0.25  # measured curvature along the bottom eigenvector within 25% of lambda_min
HOLD_MIN = 0.8

KINDS = ("ellipsoid", "hyperbolic_paraboloid", "degenerate", "unresolved")


@dataclass(frozen=True)
class Spectrum:
    """The two ends of one layer's Hessian spectrum with error bounds; ``exact``: from the dense block."""

    lambda_min: float
    error_min: float
    lambda_max: float
    error_max: float
    exact: bool
    bottom_vector: np.ndarray


def classify_ends(s: Spectrum) -> tuple[str, str]:
    """(kind, reason): ellipsoid / hyperbolic_paraboloid / degenerate when proven, else unresolved and why."""
    if s.lambda_max - s.error_max <= 0 or s.error_max > RESOLVE_REL * abs(s.lambda_max):
        return "unresolved", f"top end not resolved (error {s.error_max:.2g} vs lambda_max {s.lambda_max:.3g})"
    if abs(s.lambda_min) <= s.error_min and 2 * s.error_min <= DEGENERATE_RTOL * s.lambda_max:
        return "degenerate", (f"zero lies within the bottom end's error, which is below {DEGENERATE_RTOL:g} "
                              f"lambda_max (|lambda_min| + error = {abs(s.lambda_min) + s.error_min:.2g})")
    if s.error_min > RESOLVE_REL * abs(s.lambda_min):
        return "unresolved", (f"bottom end not resolved: error {s.error_min:.2g} > {RESOLVE_REL:g} "
                              f"|lambda_min| = {RESOLVE_REL * abs(s.lambda_min):.2g}; its sign is undetermined")
    if s.lambda_min < 0:
        return "hyperbolic_paraboloid", "lambda_min < 0 resolved (indefinite)"
    if s.exact:
        return "ellipsoid", "lambda_min > 0 resolved on the full block (positive definite)"
    return "unresolved", ("Lanczos' lowest Ritz value is positive, but it bounds lambda_min from above only: "
                          "positive definiteness is not proven")


def confirms(kind: str, s: Spectrum, measured_curvature: float) -> bool:
    """Does the float64 finite-difference curvature along the bottom eigenvector agree with ``kind``?"""
    if kind == "degenerate":
        return abs(measured_curvature) <= 1e-4 * s.lambda_max
    return bool(np.sign(measured_curvature) == np.sign(s.lambda_min)
                and abs(measured_curvature - s.lambda_min) <= CONFIRM_REL * abs(s.lambda_min))


def judge_quadric_types(kinds: Sequence[str], confirmed: Sequence[bool]) -> tuple[Verdict, float, int]:
    """Verdict of the claim 'every layer's level sets are ellipsoids or hyperbolic paraboloids'.

    Only classified layers count (unresolved ones test nothing); a classified layer supports the claim when it
    is non-degenerate and the measured curvature confirms its kind. Returns (verdict, fraction, classified)."""
    classified = [i for i, k in enumerate(kinds) if k != "unresolved"]
    if not classified:
        return Verdict.INCONCLUSIVE, float("nan"), 0
    holds = [kinds[i] in ("ellipsoid", "hyperbolic_paraboloid") and confirmed[i] for i in classified]
    fraction = float(np.mean(holds))
    verdict = Verdict.PASS if fraction >= HOLD_MIN else Verdict.PARTIAL if fraction >= 0.5 else Verdict.FAIL
    return verdict, fraction, len(classified)


def layer_spectrum(ctx: ProofContext, name: str) -> Spectrum:
    """Dense float64 spectrum for small layers, Lanczos ends (Ritz values and residuals) otherwise."""
    q = ctx.quadrics[name]
    if q.n <= ctx.dense_max:
        h = ctx.dense_hessian(name)
        asym = float(np.linalg.norm(h - h.T, 2))
        h = 0.5 * (h + h.T)
        values, vectors = np.linalg.eigh(h)
        error = asym + q.n * np.finfo(np.float64).eps * float(np.abs(values).max())
        return Spectrum(float(values[0]), error, float(values[-1]), error, True, vectors[:, 0])
    eig = ctx.curvature.layer(name).eig
    i_min = int(np.argmin(eig.bottom_values))
    i_max = int(np.argmax(eig.top_values))
    return Spectrum(float(eig.bottom_values[i_min]), float(eig.bottom_residuals[i_min]),
                    float(eig.top_values[i_max]), float(eig.top_residuals[i_max]), False,
                    np.asarray(eig.bottom_vectors[i_min], dtype=np.float64))


def fd_radius(loss: float, curvature: float, weight_norm: float) -> float:
    """The smallest step whose float64 round-off in the second difference (~4 eps |L| / r^2) stays below 1%
    of |curvature| (small steps see the least higher-order curvature), capped at 1e-3 |W|."""
    eps = float(np.finfo(np.float64).eps)
    wanted = np.sqrt(400 * eps * max(abs(loss), 1e-12) / max(abs(curvature), 1e-300))
    return float(min(wanted, 1e-3 * weight_norm))


def measured_curvature(ctx: ProofContext, name: str, u: np.ndarray, curvature: float) -> float:
    """2 x ((L(W+ru) + L(W-ru))/2 - L(W)) / r^2 in float64 (r from :func:`fd_radius`): u'Hu from the loss
    alone, with no Hessian-vector product involved."""
    r = fd_radius(ctx.base_loss, curvature, float(ctx.weights[name].double().norm()))
    plus = ctx.dloss64(ctx.perturbed64(name, u, r))
    minus = ctx.dloss64(ctx.perturbed64(name, u, -r))
    return (plus + minus) / r ** 2


def check_quadric_types(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None) -> CheckResult:
    """Check 2: classify each layer where both spectrum ends are resolved; confirm by finite differences."""
    rows, kinds, confirmed, spectra = [], [], [], []
    for name, q in ctx.quadrics.items():
        s = layer_spectrum(ctx, name)
        kind, reason = classify_ends(s)
        ok = False
        measured = float("nan")
        if kind != "unresolved":
            scale = s.lambda_max * DEGENERATE_RTOL if kind == "degenerate" else s.lambda_min
            measured = measured_curvature(ctx, name, s.bottom_vector, scale)
            ok = confirms(kind, s, measured)
        kinds.append(kind)
        confirmed.append(ok)
        spectra.append(s)
        shift = float(np.linalg.norm(q.centre_shift()))
        rows.append([name, q.n, "dense float64" if s.exact else "Lanczos", kind, s.lambda_min, s.error_min,
                     measured, s.lambda_max, s.error_max, shift, "yes" if ok else ("-" if kind == "unresolved" else "NO"),
                     reason])
    verdict, fraction, classified = judge_quadric_types(kinds, confirmed)
    counts = {k: kinds.count(k) for k in KINDS if kinds.count(k)}
    fig, ax = new_figure()
    ax.semilogy(range(len(rows)), [max(abs(s.lambda_max), 1e-300) for s in spectra], "^-", label="lambda_max")
    ax.semilogy(range(len(rows)), [max(abs(s.lambda_min), 1e-300) for s in spectra], "v-", label="|lambda_min|")
    ax.semilogy(range(len(rows)), [max(s.error_min, 1e-300) for s in spectra], "x:", label="error at bottom end")
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=70, fontsize=6)
    ax.set_ylabel("curvature")
    ax.set_title(f"{ctx.task.name}: both ends of each layer's spectrum")
    ax.legend(fontsize=7)
    figures = save_figure(fig, outdir, "check2_spectra")
    untested = ("No layer has both ends resolved: the claim is untested. " if classified == 0 else "")
    notes = (untested + f"Kinds: {', '.join(f'{v} {k}' for k, v in counts.items())}. Layers with <= {ctx.dense_max} "
             "weights: the full Hessian block in float64 (error bound = asymmetry + n eps |H|); larger layers: "
             f"Lanczos Ritz values and residuals (k = {ctx.settings.k}). An end is resolved when its error is below "
             f"{RESOLVE_REL:.0%} of its own |lambda|; 'degenerate' = an eigenvalue proven within {DEGENERATE_RTOL:g} "
             "lambda_max of zero (a flat direction: the quadric is a cylinder, a counterexample to the claim). "
             "'measured' = u'Hu along the bottom eigenvector from float64 finite differences of the loss (the "
             "smallest step whose round-off stays below 1% of |lambda_min|, at most 1e-3 |W|), which must agree "
             f"in sign and within {CONFIRM_REL:.0%}; ReLU and max-pool kinks add curvature that the Hessian "
             "does not see, and show here as a disagreement. |centre shift| = |H^+ g| over the "
             "computed eigenpairs.")
    return CheckResult(
        2, "Layer quadric types",
        "Per layer, the level sets of dL are ellipsoids (H positive definite) or hyperbolic paraboloids "
        "(indefinite).",
        "fraction of classified layers (both spectrum ends resolved) that are non-degenerate and confirmed by "
        "finite differences", "untested" if classified == 0 else f"{fraction:.0%} of {classified}",
        f">= {HOLD_MIN:.0%}; >= 1 classified layer", verdict, notes,
        (["layer", "n", "spectrum", "kind", "lambda_min", "error", "measured u'Hu", "lambda_max", "error",
          "|centre shift|", "confirmed", "why"], rows), figures,
        {"kinds": counts, "classified": classified, "fraction": fraction})

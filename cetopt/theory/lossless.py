"""Check 5: real quantisation errors that the second-order model places inside the lossless neighbourhood
(g.d < 0 and |d| <= 2|g.d^|/(d^'H d^), i.e. g.d + 1/2 d'Hd <= 0) do not raise the measured loss.

The errors are grid points, not chosen directions: round-to-nearest and stochastic roundings (each weight
to one of its two grid neighbours) at several bit-widths, per layer. Which of them fall inside the radius
is decided by the exact g.d and d'Hd (Hessian-vector products) before anything is measured.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from cetopt.quant.quantizers import fake_quantize
from cetopt.theory.context import ProofContext
from cetopt.plotting import new_figure, save_figure
from cetopt.theory.report import CheckResult, Verdict

LOSSLESS_MIN = 0.95  # fraction of inside errors whose measured loss does not rise
MIN_INSIDE = 5  # fewer inside errors than this: the claim is untested
BITS = (4, 6, 8)
VARIANTS = 8


def quantisation_errors(w: torch.Tensor, bits: int, variants: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Round-to-nearest error of ``w`` at ``bits`` and ``variants`` stochastic roundings on the same
    symmetric per-channel grid (each weight rounded down or up with probability = its fractional part)."""
    nearest = fake_quantize(w, bits).double()
    rows = w.double().reshape(w.shape[0], -1)
    scale = rows.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    units = (rows / scale).numpy()
    low = np.floor(units)
    frac = units - low
    errors = [(nearest - w.double()).numpy().ravel()]
    for _ in range(variants):
        codes = low + (rng.random(units.shape) < frac)
        errors.append(((codes * scale.numpy()) - rows.numpy()).ravel())
    return errors


def judge_lossless(inside_measured: Sequence[float], noise: float) -> tuple[Verdict, float]:
    """Verdict of 'inside the radius the loss does not rise' from the measured changes of the inside errors."""
    values = np.asarray(inside_measured, dtype=np.float64)
    if values.size < MIN_INSIDE:
        return Verdict.INCONCLUSIVE, float("nan")
    fraction = float(np.mean(values <= noise))
    return (Verdict.PASS if fraction >= LOSSLESS_MIN else Verdict.FAIL), fraction


def check_lossless(ctx: ProofContext, outdir: str | os.PathLike[str] | None = None, *, bits: Sequence[int] = BITS,
                   variants: int = VARIANTS, seed: int = 0) -> CheckResult:
    """Check 5 on real quantisation errors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows, inside, outside = [], [], []
    for name, q in ctx.quadrics.items():
        w = ctx.weights[name]
        for b in bits:
            errors = quantisation_errors(w, b, variants, rng)
            curv = ctx.directional_curvature(name, np.array(errors))
            for i, (d, k) in enumerate(zip(errors, curv)):
                linear = float(q.gradient @ d)
                predicted = linear + 0.5 * float(k)
                measured = ctx.dloss({name: w + torch.from_numpy(d).reshape(w.shape).to(w.dtype)})
                (inside if predicted <= 0 else outside).append(measured)
                if predicted <= 0:
                    rows.append([name, b, "nearest" if i == 0 else f"stochastic {i}", linear, 0.5 * float(k),
                                 predicted, measured])
    noise = abs(ctx.base_loss) * 1e-6 + 1e-9  # float32 evaluation noise of the mean loss
    verdict, frac_in = judge_lossless(inside, noise)
    out_a = np.array(outside)
    frac_out = float(np.mean(out_a > 0)) if out_a.size else float("nan")
    fig, ax = new_figure()
    if inside:
        ax.hist(inside, bins=30, alpha=0.7, label="predicted inside (g.d + 1/2 d'Hd <= 0)")
    if outside:
        ax.hist(out_a, bins=30, alpha=0.7, label="predicted outside")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("measured dL of a real quantisation error (one layer)")
    ax.legend(fontsize=7)
    figures = save_figure(fig, outdir, "check5_lossless")
    total = len(inside) + len(outside)
    notes = (f"{total} quantisation errors ({', '.join(map(str, bits))} bits; round-to-nearest and {variants} "
             f"stochastic roundings per layer and width); {len(inside)} predicted inside the lossless radius. "
             + ("Too few inside errors: the claim is untested. " if verdict is Verdict.INCONCLUSIVE else "")
             + f"Of those predicted outside, {frac_out:.0%} measurably raise the loss. Noise allowance {noise:.2g}.")
    return CheckResult(
        5, "Lossless neighbourhood",
        "A quantisation error inside the radius where the first-order term dominates (g.d < 0, "
        "g.d + 1/2 d'Hd <= 0) does not raise the loss.",
        "fraction of real quantisation errors predicted inside whose measured dL <= noise",
        "untested" if verdict is Verdict.INCONCLUSIVE else f"{frac_in:.0%} of {len(inside)}",
        f">= {LOSSLESS_MIN:.0%}; >= {MIN_INSIDE} inside errors", verdict, notes,
        (["layer", "bits", "rounding", "g.d", "1/2 d'Hd", "predicted", "measured"], rows[:60]), figures,
        {"inside_fraction": frac_in, "inside": len(inside), "outside_rising_fraction": frac_out})

"""FP=xINT's claims as checks that can fail: the series converges to the FP model, the basis models form an
Abelian group under AbelianAdd/Mul, the granularities agree where they must, and (over seeds, in
benchmarks/fp_xint.py) "4-bit above FP accuracy without calibration or fine-tuning".

Each verdict comes from a ``judge_*`` function of plain numbers, so tests feed them false cases; the
``measure_*`` functions compute those numbers on a model (cetopt.quant.basis, cetopt.quant.abelian).
``xint_checks`` runs the per-model checks on a ModelSpec (``cetopt levels`` appends them to its report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.quant.abelian import ADD, MUL, AxiomCheck, check_group_axioms
from cetopt.quant.basis import expand_model, layer_model, model_sum, tensor_model
from cetopt.stats import SeedSummary, seed_summary
from cetopt.theory.report import CheckResult, Verdict

BITS = (2, 3, 4)
TERMS = (1, 2, 3, 4)
MAX_RATE = 0.9  # a term must remove at least 10% of the residual (Frobenius) to count as shrinking
GRANULARITY_TOL = 1e-4  # layer vs tensor granularity: max |difference| / max |output| (float32 rounding)


@dataclass(frozen=True)
class XintPoint:
    """One (bits, terms) expansion of one model, measured on labelled test data.

    Attributes:
        bits, terms: b and K; bits_per_weight = K x b (values only; each term also stores its scales).
        weight_rel_error: ||W - W_K|| / ||W|| over every quantised weight together.
        max_rate: the largest per-term contraction ||R_{k+1}|| / ||R_k|| over layers and terms (< 1: shrinks).
        output_rel_error: ||f_K(x) - f(x)|| / ||f(x)|| of the tensor-granularity model's logits on the test inputs.
        accuracy, loss: test accuracy (fraction) and mean cross-entropy of the tensor-granularity model (a).
        layer_gap: max |(b) - (a)| / max |(a)|: layer granularity (K basis layers summed) vs tensor granularity.
        model_sum_rel_error: ||(c) - (a)|| / ||(a)||: the sum of K whole basis-model outputs vs the expansion.
        model_sum_accuracy: test accuracy of (c).
        model_sum_vs_first: ||(c) - f_0(x)|| / ||f_0(x)||: how far the sum moves from the first basis model alone
            (f_0 is the K = 1 expansion: plain b-bit rounding).
        parallel_gap: max |(c) batched - (c) one model after another| / max |(c)|.
        plain_accuracy, plain_loss: one term of K x b bits (plain round-to-nearest), None above 16 bits.
    """

    bits: int
    terms: int
    bits_per_weight: int
    weight_rel_error: float
    max_rate: float
    output_rel_error: float
    accuracy: float
    loss: float
    layer_gap: float
    model_sum_rel_error: float
    model_sum_accuracy: float
    model_sum_vs_first: float
    parallel_gap: float
    plain_accuracy: float | None
    plain_loss: float | None


def _scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    return (float((logits.argmax(dim=1) == y).double().mean()),
            float(nn.functional.cross_entropy(logits.double(), y)))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / b.double().norm())


def measure_expansions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bits: Sequence[int] = BITS,
                       terms: Sequence[int] = TERMS, layers: Sequence[str] | None = None,
                       exclude: Sequence[str] = (), check_size: int = 512
                       ) -> tuple[tuple[float, float], list[XintPoint]]:
    """((FP accuracy, FP loss), one :class:`XintPoint` per (b, K)) of classifier ``model`` on test data ``x``
    (inputs), ``y`` (int64 labels). No calibration data and no fine-tuning: every expansion rounds the weights
    to nearest on their own per-channel grid; ``layers`` / ``exclude`` choose the expanded layers as in
    cetopt.quant.basis.expand_model. The two agreement gaps (layer vs tensor, batched vs sequential) are
    measured on the first ``check_size`` inputs; everything else on all of them."""
    model = model.eval()
    with torch.no_grad():
        reference = model(x)
    fp = _scores(reference, y)
    few = x[:check_size]
    points = []
    for b in bits:
        with torch.no_grad():
            # f_0: basis 0 alone (the K = 1 expansion)
            first = tensor_model(model, expand_model(model, b, 1, layers=layers, exclude=exclude))(x)
        for k in terms:
            e = expand_model(model, b, k, layers=layers, exclude=exclude)
            with torch.no_grad():
                a = tensor_model(model, e)(x)
                lb = layer_model(model, e)(few)
            c = model_sum(model, e, x)
            c_seq = model_sum(model, e, few, parallel=False)
            num = sum(float((s.weight.double() - w.double()).norm()) ** 2
                      for s, w in ((e.series[key], model.state_dict()[key]) for key in e.series))
            den = sum(float(model.state_dict()[key].double().norm()) ** 2 for key in e.series)
            rates = [r for s in e.series.values() for r in s.rates if s.residual_norms[0] > 0]
            plain: tuple[float | None, float | None] = (None, None)
            if b * k <= 16:
                single = expand_model(model, b * k, 1, layers=layers, exclude=exclude)
                with torch.no_grad():
                    plain = _scores(tensor_model(model, single)(x), y)
            acc, loss = _scores(a, y)
            points.append(XintPoint(
                bits=b, terms=k, bits_per_weight=b * k, weight_rel_error=float(np.sqrt(num / den)),
                max_rate=float(max(rates)) if rates else 0.0, output_rel_error=_rel(a, reference), accuracy=acc,
                loss=loss, layer_gap=float((lb - a[:check_size]).abs().max() / a[:check_size].abs().max()),
                model_sum_rel_error=_rel(c, a), model_sum_accuracy=_scores(c, y)[0],
                model_sum_vs_first=_rel(c, first),
                parallel_gap=float((c[:check_size] - c_seq).abs().max() / c_seq.abs().max()),
                plain_accuracy=plain[0], plain_loss=plain[1]))
    return fp, points


def judge_convergence(max_rates: Sequence[float], output_errors: Sequence[float], *, max_rate: float = MAX_RATE
                      ) -> tuple[Verdict, str]:
    """The series converges: every term shrinks the residual (each ``max_rates`` entry < ``max_rate``) and the
    output error falls with K (``output_errors`` in increasing K, for one bit-width). Fail when some term does
    not shrink the residual; partial when the weights converge but the output error does not fall
    monotonically; inconclusive on non-finite numbers or fewer than two K."""
    rates, errs = np.asarray(max_rates, float), np.asarray(output_errors, float)
    if len(errs) < 2 or not (np.all(np.isfinite(rates)) and np.all(np.isfinite(errs))):
        return Verdict.INCONCLUSIVE, "needs finite errors at two or more K"
    if np.any(rates >= max_rate):
        return Verdict.FAIL, f"a term does not shrink its residual (largest rate {rates.max():.3f} >= {max_rate})"
    falls = bool(np.all(np.diff(errs) < 0) or errs[-1] == 0.0)
    if not falls:
        return Verdict.PARTIAL, "the weights converge, but the output error does not fall at every K"
    return Verdict.PASS, (f"every term shrinks the residual (largest rate {rates.max():.3f}); output error "
                          f"{errs[0]:.3g} at K=1 -> {errs[-1]:.3g}")


def judge_axioms(checks: Sequence[AxiomCheck]) -> tuple[Verdict, str]:
    """Pass when every operation meets every axiom to its tolerance; fail naming the violated ones."""
    if not checks:
        return Verdict.INCONCLUSIVE, "no samples"
    bad = [f"{c.op}: {', '.join(c.failed)}" for c in checks if c.failed]
    return (Verdict.FAIL, "violated: " + "; ".join(bad)) if bad else (Verdict.PASS, "all axioms hold")


def judge_above_fp(differences: Sequence[float], *, confidence: float = 0.95) -> tuple[Verdict, SeedSummary]:
    """"Above FP accuracy" from per-seed differences (compressed - FP, paired by seed), Student-t interval over
    the seeds: pass when the interval lies above 0; fail when it lies below 0 or every seed ties FP exactly
    (equal is not above); inconclusive when it contains 0 (the seeds cannot tell), with one seed, or when every
    seed gives the same non-zero difference (no spread: the t interval has zero width and claims certainty that
    a handful of test examples cannot give)."""
    d = np.asarray(differences, float)
    summary = seed_summary(d, confidence=confidence)
    if d.size < 2:
        return Verdict.INCONCLUSIVE, summary
    if summary.std == 0.0 and summary.mean != 0.0:
        return Verdict.INCONCLUSIVE, summary  # every seed the same non-zero difference: a zero-width t interval
    if summary.low > 0:
        return Verdict.PASS, summary
    if summary.high < 0 or np.all(d == 0):
        return Verdict.FAIL, summary
    return Verdict.INCONCLUSIVE, summary


def judge_granularity(layer_gaps: Sequence[float], parallel_gaps: Sequence[float], *, tol: float = GRANULARITY_TOL
                      ) -> tuple[Verdict, str]:
    """Layer granularity must equal tensor granularity (Linear/Conv are linear in the weight), and the batched
    basis models their sequential sum, both to ``tol`` (relative to the output's largest value)."""
    worst_layer = float(np.max(layer_gaps)) if len(layer_gaps) else float("nan")
    worst_parallel = float(np.max(parallel_gaps)) if len(parallel_gaps) else float("nan")
    if not (np.isfinite(worst_layer) and np.isfinite(worst_parallel)):
        return Verdict.INCONCLUSIVE, "nothing measured"
    note = f"layer vs tensor {worst_layer:.2g}, batched vs sequential {worst_parallel:.2g}"
    return (Verdict.PASS if max(worst_layer, worst_parallel) <= tol else Verdict.FAIL), note


def _inputs_labels(task: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Concatenated (inputs, int labels) of a spec's validation batches (else calibration), for classifiers."""
    batches = list(task.validation) or list(task.calibration)
    try:
        xs = [b[0] for b in batches]
        ys = [b[1] for b in batches]
        if not all(isinstance(t, torch.Tensor) for t in (*xs, *ys)) or ys[0].dtype != torch.int64 or ys[0].dim() != 1:
            return None
        return torch.cat(xs), torch.cat(ys)
    except (TypeError, IndexError, KeyError):
        return None


def xint_checks(task: Any, *, bits: Sequence[int] = BITS, terms: Sequence[int] = TERMS
                ) -> tuple[list[CheckResult], list[XintPoint]]:
    """The per-model FP=xINT checks on a classifier ModelSpec (inputs, int64 labels batches), measured on its
    validation batches (held out from calibration; never the test set): Abelian-group axioms on the basis
    models' parameter tuples, series convergence per bit-width, and granularity agreement."""
    data = _inputs_labels(task)
    if data is None:
        why = (f"{task.name}'s batches are not (inputs, int64 labels): the checks measure a classifier's accuracy "
               "and loss, so they were not run")
        logging.getLogger(__name__).info("FP=xINT checks skipped: %s", why)
        return [CheckResult(0, "FP=xINT checks", "the FP=xINT claims", "-", "not run", "-", Verdict.INCONCLUSIVE,
                            why)], []
    x, y = data
    fp, points = measure_expansions(task.model, x, y, bits=bits, terms=terms, layers=task.layers,
                                    exclude=task.exclude)
    e = expand_model(task.model, max(bits), max(max(terms), 3), layers=task.layers, exclude=task.exclude)
    tuples = [e.additive_tuple(k) for k in range(e.terms)]
    nonzero = [{n: torch.where(v == 0, torch.ones_like(v), v) for n, v in t.items()} for t in tuples]
    axioms = [check_group_axioms(ADD, tuples), check_group_axioms(MUL, nonzero)]
    verdict, note = judge_axioms(axioms)
    results = [CheckResult(
        1, "AbelianAdd / AbelianMul form Abelian groups on the basis models",
        "The basis models' parameter tuples form an Abelian group under entrywise addition, and (entries "
        "without zeros) under entrywise multiplication.",
        "largest axiom violation over the K basis tuples (machine epsilons)",
        ", ".join(f"{c.op} {max(c.errors.values()):.2g}" for c in axioms), f"<= {axioms[0].tolerance:g} eps",
        verdict, note + ". Zero entries are replaced by 1 for AbelianMul (only the units form its group).",
        (["operation", *axioms[0].errors], [[c.op, *(f"{v:.3g}" for v in c.errors.values())] for c in axioms]),
        data={"axioms": [{"op": c.op, "errors": c.errors, "tolerance": c.tolerance} for c in axioms]})]
    rows, verdicts = [], []
    for b in bits:
        pts = sorted((p for p in points if p.bits == b), key=lambda p: p.terms)
        v, why = judge_convergence([p.max_rate for p in pts], [p.output_rel_error for p in pts])
        verdicts.append(v)
        rows.append([b, ", ".join(f"{p.weight_rel_error:.2g}" for p in pts),
                     ", ".join(f"{p.output_rel_error:.2g}" for p in pts),
                     ", ".join(f"{p.accuracy:.4f}" for p in pts), v.value, why])
    overall = (Verdict.FAIL if Verdict.FAIL in verdicts else Verdict.PARTIAL if Verdict.PARTIAL in verdicts else
               Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in verdicts else Verdict.PASS)
    results.append(CheckResult(
        2, "The series expansion converges to the FP model",
        "W_K = sum_k s_k Q_b(R_k) -> W as K grows, and the expanded model's outputs -> the FP outputs.",
        "verdicts per bit-width (every term shrinks the residual; output error falls with K)",
        ", ".join(f"{b} bits {v.value}" for b, v in zip(bits, verdicts)), f"rate < {MAX_RATE}", overall,
        f"FP validation accuracy {fp[0]:.4f}. Errors and accuracies listed for K = {', '.join(map(str, terms))}.",
        (["bits", "weight rel. error", "output rel. error", "accuracy", "verdict", "why"], rows)))
    v, note = judge_granularity([p.layer_gap for p in points], [p.parallel_gap for p in points])
    worst = max(points, key=lambda p: p.model_sum_rel_error)
    results.append(CheckResult(
        3, "Layer granularity equals tensor granularity; batched basis models equal their sequential sum",
        "K basis layers summed = one layer with the summed weights (linear in W); the batched (vmap) evaluation "
        "of the K basis models = running them one by one.",
        "largest relative gap", note, f"<= {GRANULARITY_TOL:g}", v,
        f"Model granularity (sum of whole basis-model outputs) is an approximation: its relative error against "
        f"the expansion reaches {worst.model_sum_rel_error:.3g} ({worst.bits} bits, K={worst.terms}).",
        data={"points": [p.__dict__ for p in points], "fp": list(fp)}))
    return results, points


def render_checks(results: Sequence[CheckResult]) -> str:
    """A markdown section of the checks (used by ``cetopt levels``)."""
    from cetopt.tables import markdown_table

    parts = ["## FP=xINT: basis models, Abelian group, convergence",
             markdown_table(["#", "check", "value", "tolerance", "verdict"],
                            [[c.number, c.title, c.value, c.tolerance, f"**{c.verdict.value}**"] for c in results])]
    for c in results:
        parts.append(f"### {c.number}. {c.title}: {c.verdict.value}\n\n**Claim.** {c.claim}\n\n{c.notes}")
        if c.table is not None:
            parts.append(markdown_table(*c.table))
    return "\n\n".join(parts)

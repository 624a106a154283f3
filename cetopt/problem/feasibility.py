"""Cheap budget checks: is each budget attainable on its own, and what is the smallest that is?

These answers are exact per budget (each budget alone is a separable minimum over groups). When every
budget is attainable alone but not all together, only a solver can prove infeasibility.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.evaluate import within


@dataclass(frozen=True)
class Floors:
    """The smallest value each quantity can take under the per-layer constraints and ties.

    Attributes:
        size_bits: smallest total size in bits.
        avg_bits: the same as mean bits per weight.
        bops: smallest total BOPs, or None when no BOPs are defined.
        loss: smallest total loss (a lower bound when interaction terms exist).
        loss_exact: whether ``loss`` is attained (False with interaction terms).
    """

    size_bits: float
    avg_bits: float
    bops: float | None
    loss: float
    loss_exact: bool


def floors(compiled: CompiledProblem) -> Floors:
    """Per-quantity minima over all allocations that respect bits constraints and ties."""
    size = float(compiled.padded("size", np.inf).min(axis=1).sum())
    bops = None
    if compiled.max_bops is not None:
        bops = float(compiled.padded("bops", np.inf).min(axis=1).sum())
    loss = float(compiled.padded("loss", np.inf).min(axis=1).sum())
    loss += float(sum(p.matrix.min() for p in compiled.pairs))
    total = compiled.problem.total_params
    return Floors(size_bits=size, avg_bits=size / total, bops=bops, loss=loss, loss_exact=not compiled.pairs)


def budget_shortfalls(compiled: CompiledProblem) -> list[str]:
    """Messages for budgets that cannot be met even on their own; empty when each is attainable."""
    low = floors(compiled)
    budget = compiled.problem.budget
    total = compiled.problem.total_params
    out = []
    if compiled.max_size is not None and not within(low.size_bits, compiled.max_size):
        asked = ", ".join(f"{k}={getattr(budget, k):g}" for k in ("avg_bits", "size_bits", "size_bytes", "ratio")
                          if getattr(budget, k) is not None)
        out.append(
            f"size budget ({asked}) cannot be met: the smallest feasible size is {low.size_bits:.0f} bits = "
            f"avg_bits {low.avg_bits:.6g} = ratio {32 * total / low.size_bits:.6g}x vs FP32 "
            "(given the candidate bits, min/max/fixed bits and ties)")
    if compiled.max_bops is not None and low.bops is not None and not within(low.bops, compiled.max_bops):
        out.append(f"bops budget {compiled.max_bops:.6g} cannot be met: the smallest feasible BOPs is {low.bops:.6g}")
    if compiled.max_loss is not None and not within(low.loss, compiled.max_loss):
        qualifier = "" if low.loss_exact else "at least "
        out.append(f"max_loss {compiled.problem.budget.max_loss:.6g} cannot be met: the smallest achievable loss is "
                   f"{qualifier}{low.loss * compiled.loss_unit:.6g}")
    return out

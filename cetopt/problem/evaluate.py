"""Score an allocation against a problem: objective, size, BOPs and every violated constraint.

This is the single source of truth for what an allocation costs; ``cetopt.solve`` uses it to re-check
every backend's answer, so no backend can report a wrong objective or an infeasible plan silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Minimize

# Relative slack allowed on every budget, so float sums never flip a verdict at the boundary. The
# compiled problem hands backends limit + budget_slack(limit); the final check allows a hair more, so an
# answer a backend found at its (slightly relaxed) limit always passes.
BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class Evaluation:
    """What an allocation costs.

    Attributes:
        objective: the minimised quantity (total loss, or size in bits when minimising size).
        loss: total predicted loss including interaction terms.
        interaction_loss: the part of ``loss`` that comes from pairwise interaction terms.
        size_bits: total storage in bits.
        avg_bits: size_bits / total params.
        ratio: compression ratio vs FP32.
        bops: total bit-operations, or None when some layer has neither macs nor bops.
        violations: human-readable violated constraints; empty means feasible.
    """

    objective: float
    loss: float
    interaction_loss: float
    size_bits: float
    avg_bits: float
    ratio: float
    bops: float | None
    violations: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        return not self.violations


def budget_slack(limit: float, scale: float = 1.0) -> float:
    """The absolute slack allowed on a budget ``limit``: BUDGET_RTOL relative to the larger of |limit| and
    ``scale``, the magnitude of the terms summed (1 bit for sizes; the largest |loss| for loss budgets, so
    that rescaling every loss by any factor rescales the slack too and leaves every verdict unchanged)."""
    return BUDGET_RTOL * max(scale, abs(limit))


def loss_scale(problem: AllocationProblem) -> float:
    """The largest |loss| of any choice or interaction entry (a tiny positive number when all are 0)."""
    columns = problem.columns
    if columns is not None:
        losses = columns.loss
    else:
        count = sum(len(layer.choices) for layer in problem.layers)
        losses = np.fromiter((c.loss for layer in problem.layers for c in layer.choices), np.float64, count)
    largest = float(np.abs(losses).max(initial=0.0))
    for term in problem.interactions:
        largest = max(largest, float(np.abs(np.asarray(term.loss, dtype=np.float64)).max(initial=0.0)))
    return largest if largest > 0 else 1e-300


def within(value: float, limit: float, scale: float = 1.0) -> bool:
    """``value <= limit`` up to the budget slack (and a little more, for backends' own rounding)."""
    return value <= limit + 1.01 * budget_slack(limit, scale)


def evaluate(problem: AllocationProblem, choices: Mapping[str, int]) -> Evaluation:
    """Evaluate an allocation given as layer name -> choice index (into ``layer.choices``)."""
    missing = [name for name in problem.layer_names if name not in choices]
    if missing:
        raise ProblemError(f"no choice for layer(s) {missing[:5]}", field="choices")
    unknown = [name for name in choices if name not in problem._index]  # type: ignore[attr-defined]
    if unknown:
        raise ProblemError(f"unknown layer(s) {unknown[:5]}", field="choices")
    violations: list[str] = []
    if problem.columns is not None:
        loss, size, bops = _column_totals(problem, choices)
    else:
        loss, size, bops = _layer_totals(problem, choices, violations)
    interaction = 0.0
    for term in problem.interactions:
        interaction += term.loss[choices[term.a]][choices[term.b]]
    loss += interaction
    for g, group in enumerate(problem.ties):
        bits = {problem.layer(name).choices[choices[name]].bits for name in group}
        if len(bits) > 1:
            violations.append(f"ties[{g}]: layers {list(group)} take different bits {sorted(bits)}")
    violations += _budget_violations(problem, loss, size, bops)
    objective = size if problem.minimize is Minimize.SIZE else loss
    return Evaluation(
        objective=objective, loss=loss, interaction_loss=interaction, size_bits=size,
        avg_bits=size / problem.total_params, ratio=problem.fp32_size_bits / size if size > 0 else float("inf"),
        bops=bops, violations=tuple(violations),
    )


def _column_totals(problem: AllocationProblem, choices: Mapping[str, int]) -> tuple[float, float, float | None]:
    """Loss, size in bits and BOPs (None without macs) of plain layers held as arrays (cetopt.problem.columns:
    no bit constraints)."""
    columns = problem.columns
    assert columns is not None
    index = [choices[name] for name in columns.names]
    picked = np.array(index, dtype=np.int64) if all(type(i) is int for i in index) else None
    if picked is None or ((picked < 0) | (picked >= columns.counts)).any():
        bad = next(i for i, v in enumerate(index) if type(v) is not int or not 0 <= v < columns.counts[i])
        raise ProblemError(f"choice index {index[bad]!r} out of range 0..{columns.counts[bad] - 1}",
                           field=f"choices[{columns.names[bad]!r}]")
    position = columns.chosen(picked)
    bops = None if columns.macs is None else float(
        (columns.macs.astype(np.float64) * columns.bits[position]).sum() * problem.activation_bits)
    return float(columns.loss[position].sum()), float(columns.size_bits[position].sum()), bops


def _layer_totals(problem: AllocationProblem, choices: Mapping[str, int],
                  violations: list[str]) -> tuple[float, float, float | None]:
    """Loss, size in bits and BOPs (None when a layer has neither macs nor bops) over ``problem.layers``; a choice
    outside a layer's bit limits is appended to ``violations``."""
    loss = size = 0.0
    bops: float | None = 0.0
    for layer in problem.layers:
        index = choices[layer.name]
        if not isinstance(index, int) or not 0 <= index < len(layer.choices):
            raise ProblemError(f"choice index {index!r} out of range 0..{len(layer.choices) - 1}",
                               field=f"choices[{layer.name!r}]")
        choice = layer.choices[index]
        loss += choice.loss
        size += layer.size_bits(choice)
        layer_bops = layer.bops(choice, problem.activation_bits)
        bops = None if bops is None or layer_bops is None else bops + layer_bops
        if not layer.is_allowed(choice):
            violations.append(f"layer {layer.name!r}: {choice.bits} bits outside min_bits={layer.min_bits}, "
                              f"max_bits={layer.max_bits}, fixed_bits={layer.fixed_bits}")
    return loss, size, bops


def _budget_violations(problem: AllocationProblem, loss: float, size: float, bops: float | None) -> list[str]:
    """The budgets (size, BOPs, max_loss) the totals break, each as a sentence."""
    budget, violations = problem.budget, []
    max_size = problem.max_size_bits
    if max_size is not None and not within(size, max_size):
        violations.append(f"size {size:.6g} bits exceeds the budget {max_size:.6g} bits")
    if budget.bops is not None:
        if bops is None:
            violations.append("a BOPs budget is set but some layer has neither macs nor bops")
        elif not within(bops, budget.bops):
            violations.append(f"BOPs {bops:.6g} exceed the budget {budget.bops:.6g}")
    if budget.max_loss is not None and not within(loss, budget.max_loss, loss_scale(problem)):
        violations.append(f"loss {loss:.6g} exceeds max_loss {budget.max_loss:.6g}")
    return violations


def choices_from_bits(problem: AllocationProblem, bits: Mapping[str, int]) -> dict[str, int]:
    """Translate layer -> bit-width into layer -> choice index (bits must identify one choice)."""
    out: dict[str, int] = {}
    for layer in problem.layers:
        if layer.name not in bits:
            raise ProblemError(f"no bit-width for layer {layer.name!r}", field="bits")
        matches = [i for i, c in enumerate(layer.choices) if c.bits == bits[layer.name]]
        if len(matches) != 1:
            raise ProblemError(
                f"layer {layer.name!r}: {bits[layer.name]} bits matches {len(matches)} choices; "
                f"candidates are {[c.label for c in layer.choices]}", field=f"bits[{layer.name!r}]")
        out[layer.name] = matches[0]
    return out

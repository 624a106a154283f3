"""Negative loss changes: candidates whose predicted or measured change is below zero, and plans that rely on them.

A quantised weight can only lower a loss whose minimum is not at the original weights: cross-entropy against the
model's own top-1, for instance, rewards a sharper softmax, so a coarse classifier that scales its logits up "helps".
A plan built on such a loss takes those candidates and ships a model that behaves less like the original. The
fidelity objective (cetopt.losses: a ModelSpec without loss_fn) has its minimum at the FP32 weights, so every
change is >= 0 there; under it a negative prediction is a numerical fault (checked at build, warned).

The builder records the problem's negative candidates in ``metadata["negative_changes"]`` ({layer: {label:
{"predicted": dL, "measured": dL or None}}}, the loss's unit); :func:`plan_reliance` reads it with the plan's
choices, and :func:`warn_if_negative` says how many layers and how much of the plan's predicted change rely on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

RTOL = 1e-9  # a change below -RTOL x the largest |change| of the problem counts as negative (rounding is not)
REMEDY = ("the loss rewards moving away from the FP32 model (e.g. a sharper softmax); use the fidelity objective: "
          "omit ModelSpec.loss_fn, or pass loss_fn=cetopt.losses.kl_to_reference (output_mse / cosine_to_reference "
          "for other outputs)")


def _tolerance(values: Sequence[float]) -> float:
    finite = [abs(v) for v in values if v is not None and np.isfinite(v)]
    return RTOL * max(finite, default=0.0)


def negative_candidates(labels: Mapping[str, Sequence[str]], predicted: Mapping[str, np.ndarray],
                        measured: Mapping[str, np.ndarray | None]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per layer, the candidates (by label) whose predicted or measured change is negative.

    Args:
        labels: layer -> each candidate's label (``Choice.label``), K per layer.
        predicted: layer -> (K,) predicted change (the cost model's).
        measured: layer -> (K,) measured change with the candidate alone, or None where not measured.
    """
    everything = [float(v) for arr in (*predicted.values(), *(m for m in measured.values() if m is not None))
                  for v in np.ravel(arr)]
    tol = _tolerance(everything)
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for layer, names in labels.items():
        found = measured.get(layer)
        for k, label in enumerate(names):
            p = float(predicted[layer][k])
            m = None if found is None else float(found[k])
            if p < -tol or (m is not None and m < -tol):
                out.setdefault(layer, {})[label] = {"predicted": p, "measured": m}
    return out


@dataclass(frozen=True)
class Reliance:
    """How a plan relies on negative changes.

    Attributes:
        layers: (layer, label, predicted, measured or None) of each planned choice with a negative change.
        negative_predicted: the sum of those choices' negative predicted changes (<= 0, the loss's unit).
        plan_predicted: the plan's total predicted change (sum over its layers' choices, interactions left out).
        plan_measured: the plan's measured change when given, else None.
    """

    layers: tuple[tuple[str, str, float, float | None], ...]
    negative_predicted: float
    plan_predicted: float
    plan_measured: float | None = None

    def message(self, objective: str = "") -> str:
        named = ", ".join(f"{layer} at {label} (predicted {p:+.4g}" + (f", measured alone {m:+.4g})" if m is not None
                                                                         else ")")
                          for layer, label, p, m in self.layers[:8])
        more = f" and {len(self.layers) - 8} more" if len(self.layers) > 8 else ""
        parts = []
        if self.layers:
            parts.append(f"the plan relies on negative loss changes in {len(self.layers)} layer(s): {named}{more}; "
                         f"their predicted changes sum to {self.negative_predicted:+.4g} of the plan's "
                         f"{self.plan_predicted:+.4g}")
        if self.plan_measured is not None and self.plan_measured < 0:
            parts.append(f"the whole plan's measured loss change is negative ({self.plan_measured:+.4g})")
        return "; ".join(parts) + (f" [objective: {objective}]" if objective else "") + f". Remedy: {REMEDY}"


def plan_reliance(problem: Any, choices: Mapping[str, int], *, measured: float | None = None) -> Reliance | None:
    """The negative changes a plan relies on (None when it relies on none).

    Args:
        problem: the AllocationProblem the plan was solved on (its ``metadata["negative_changes"]`` is read when
            present; otherwise only the choices' predicted losses are checked).
        choices: layer -> index into that layer's choices.
        measured: the whole plan's measured loss change, if known (a negative one is reported too).
    """
    recorded = problem.metadata.get("negative_changes", {}) or {}
    columns = getattr(problem, "columns", None)
    if columns is not None and not recorded:  # layers as arrays (cetopt.problem.columns): no 10^6 objects
        tol = _tolerance([float(np.abs(columns.loss).max())])
        picked = np.fromiter((choices[name] for name in columns.names), np.int64, len(columns))
        loss = columns.loss[columns.chosen(picked)]
        negative = np.flatnonzero(loss < -tol)
        rows = [(columns.names[i], f"{columns.bits[columns.chosen(picked)][i]}b", float(loss[i]), None)
                for i in negative]
        if not rows and not (measured is not None and measured < -tol):
            return None
        return Reliance(layers=tuple(rows), negative_predicted=float(sum(p for _, _, p, _ in rows)),
                        plan_predicted=float(loss.sum()), plan_measured=measured)
    chosen = {layer.name: layer.choices[choices[layer.name]] for layer in problem.layers}
    tol = _tolerance([c.loss for layer in problem.layers for c in layer.choices])
    rows = []
    for name, choice in chosen.items():
        entry = recorded.get(name, {}).get(choice.label)
        m = None if entry is None else entry.get("measured")
        if choice.loss < -tol or (m is not None and m < -tol):
            rows.append((name, choice.label, float(choice.loss), m))
    plan_predicted = float(sum(c.loss for c in chosen.values()))
    if not rows and not (measured is not None and measured < -tol):
        return None
    return Reliance(layers=tuple(rows), negative_predicted=float(sum(min(p, 0.0) for _, _, p, _ in rows)),
                    plan_predicted=plan_predicted, plan_measured=measured)


def warn_if_negative(problem: Any, choices: Mapping[str, int], *, measured: float | None = None) -> Reliance | None:
    """:func:`plan_reliance`, logged as a WARNING naming the layers and the remedy when the plan relies on any."""
    reliance = plan_reliance(problem, choices, measured=measured)
    if reliance is not None:
        log.warning(reliance.message(str(problem.metadata.get("objective", ""))))
    return reliance

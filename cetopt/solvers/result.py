"""What a solve returns: one status vocabulary and one frozen result type for every backend."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal, Mapping

import numpy as np


class Status(StrEnum):
    """Why a solve stopped.

    OPTIMAL: proved optimal: the certified relative gap is within GAP_TOLERANCE.
    FEASIBLE: a feasible allocation without a proof of optimality (see ``gap`` and ``limit``).
    INFEASIBLE: proved that no allocation meets the budgets.
    NO_SOLUTION: stopped (e.g. at a time limit) without a feasible allocation or a proof.
    ERROR: the backend failed, or returned an answer that did not check out.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    NO_SOLUTION = "no_solution"
    ERROR = "error"


Limit = Literal["time", "states", "interrupted"]

# A result is OPTIMAL only when (objective - bound) <= GAP_TOLERANCE * max(|objective|, |bound|): the
# certified relative gap every exact backend must reach (otherwise it is FEASIBLE, with its gap).
GAP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Outcome:
    """A backend's raw answer, before ``cetopt.solve`` checks and scores it.

    Attributes:
        status: the backend's verdict.
        choice_index: one option index per compiled group (into ``Group.options``), or None when there is
            no allocation.
        bound: a proven lower bound on the objective (None if the backend proves none).
        limit: which limit stopped the run, if any.
        message: a human-readable note (tolerances, fallbacks, native status names).
        extra: backend-specific numbers (nodes, iterations, relaxation values).
    """

    status: Status
    choice_index: np.ndarray | None = None
    bound: float | None = None
    limit: Limit | None = None
    message: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """(objective - bound) / max(|objective|, |bound|); 0 when they are equal, None when either is None."""
    if objective is None or bound is None:
        return None
    diff = objective - bound
    if diff <= 0:
        return 0.0
    scale = max(abs(objective), abs(bound))
    return diff / scale if scale > 0 else 0.0


def _jsonable(value: Any) -> Any:
    if type(value) is dict and all(type(v) is int for v in value.values()) and all(type(k) is str for k in value):
        return dict(value)  # bits / choices: layer -> int, 10^5 - 10^6 entries
    if isinstance(value, float):
        if math.isfinite(value):
            return int(value) if value.is_integer() and abs(value) < 2**53 else value
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


@dataclass(frozen=True)
class SolveResult:
    """The answer of :func:`cetopt.solve`; its fields are the keys of ``cetopt solve --format json``.

    Attributes:
        bits: layer name -> bit-width (empty when there is no allocation).
        choices: layer name -> index into that layer's ``choices`` (identifies rank/terms too).
        status: see :class:`Status`.
        objective: the minimised value (loss, or size in bits), recomputed from the problem.
        loss: total predicted loss of the allocation (interaction terms included).
        size_bits: total storage in bits; avg_bits and ratio (vs FP32) derive from it.
        bops: total bit-operations, when defined.
        bound: proven lower bound on the objective, or None.
        gap: (objective - bound) / max(|objective|, |bound|), or None without a bound.
        seconds: wall time of the backend call.
        solver: backend (or solver-config) name; options: the options it ran with.
        limit: which limit stopped it ("time"), or None.
        message: notes, tolerances, the reason for infeasibility.
        problem: the problem's name.
        extra: backend-specific numbers (nodes, relaxation values).
        versions: cetopt, numpy, scipy, torch, cvxpy, ortools, highspy, networkx versions it ran with.
    """

    bits: Mapping[str, int]
    choices: Mapping[str, int]
    status: Status
    objective: float | None
    loss: float | None
    size_bits: float | None
    avg_bits: float | None
    ratio: float | None
    bops: float | None
    bound: float | None
    gap: float | None
    seconds: float
    solver: str
    options: Mapping[str, Any]
    limit: Limit | None
    message: str
    problem: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when an allocation is present (optimal or feasible)."""
        return self.status in (Status.OPTIMAL, Status.FEASIBLE)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: exactly what ``cetopt solve --format json`` prints."""
        # shallow, not dataclasses.asdict: a deep copy of 10^5-entry bits/choices maps is slow and changes nothing
        return _jsonable({f.name: getattr(self, f.name) for f in fields(self)})  # type: ignore[no-any-return]


class SolveInterrupted(KeyboardInterrupt):
    """Ctrl-C during a solve; ``result`` is the incumbent (limit "interrupted") or a NO_SOLUTION result."""

    def __init__(self, result: SolveResult) -> None:
        super().__init__("interrupted")
        self.result = result

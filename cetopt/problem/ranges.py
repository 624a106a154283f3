"""The numbers a backend can take: every nonzero loss, size, BOPs and budget of a problem is checked against
these magnitudes before compiling, and a value outside them is refused with its field named."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem

# Losses may span 1e-11 .. 1e9 inside one problem (outliers are reduced away before integer scaling);
# beyond 1e+-150 float products overflow or lose all precision, so such inputs are refused up front.
MAX_MAGNITUDE = 1e150
MIN_MAGNITUDE = 1e-150
MAX_SIZE_BITS = 2.0**53  # sizes are summed as exact integers in float64


def _check_value(value: float, field: str, *, high: float = MAX_MAGNITUDE) -> None:
    magnitude = abs(value)
    if magnitude > high:
        raise ProblemError(f"{value:.6g} is out of range (|value| <= {high:.6g}); rescale the inputs or drop "
                           "this entry", field=field)
    if 0 < magnitude < MIN_MAGNITUDE:
        raise ProblemError(f"{value:.6g} is below {MIN_MAGNITUDE:g} in magnitude (subnormal numbers lose all "
                           "precision); use 0 or rescale", field=field)


@dataclass(frozen=True)
class FlatChoices:
    """Every choice of every layer in one pass: (N,) loss and size, and each layer's first index."""

    loss: np.ndarray
    size: np.ndarray
    start: np.ndarray  # (L + 1,) layer i's choices are [start[i], start[i + 1])

    @classmethod
    def of(cls, problem: AllocationProblem) -> "FlatChoices":
        columns = problem.columns
        if columns is not None:
            return cls(columns.loss, columns.size_bits, columns.start)
        counts = np.array([len(layer.choices) for layer in problem.layers], dtype=np.int64)
        total = int(counts.sum())
        loss = np.fromiter((c.loss for layer in problem.layers for c in layer.choices), np.float64, total)
        size = np.fromiter((layer.size_bits(c) for layer in problem.layers for c in layer.choices), np.float64,
                           total)
        return cls(loss, size, np.concatenate(([0], np.cumsum(counts))))

    def field(self, flat_index: int) -> str:
        layer = int(np.searchsorted(self.start, flat_index, side="right") - 1)
        return f"layers[{layer}].choices[{flat_index - int(self.start[layer])}]"


def _out_of_range(values: np.ndarray, high: float = MAX_MAGNITUDE) -> np.ndarray:
    magnitude = np.abs(values)
    return (magnitude > high) | ((magnitude > 0) & (magnitude < MIN_MAGNITUDE))


def check_ranges(problem: AllocationProblem, flat: FlatChoices) -> None:
    """Refuse numbers no backend can take (with the field named) before any backend sees them."""
    for values, key, high in ((flat.loss, "loss", MAX_MAGNITUDE), (flat.size, "size_bits", MAX_SIZE_BITS)):
        bad = np.flatnonzero(_out_of_range(values, high))
        if bad.size:
            _check_value(float(values[bad[0]]), f"{flat.field(int(bad[0]))}.{key}", high=high)
    for i, layer in enumerate(problem.layers if problem.columns is None else ()):  # columns carry no bops
        for j, choice in enumerate(layer.choices):
            if choice.bops is not None:
                _check_value(choice.bops, f"layers[{i}].choices[{j}].bops")
    for t, term in enumerate(problem.interactions):
        values = np.asarray(term.loss, dtype=np.float64)
        bad = _out_of_range(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            _check_value(float(values[r, c]), f"interactions[{t}].loss[{r}][{c}]")
    budget = problem.budget
    for key in ("avg_bits", "size_bits", "size_bytes", "ratio", "bops", "max_loss"):
        value = getattr(budget, key)
        if value is not None:  # huge budgets are fine (they cannot bind and are clamped); tiny ones are not
            _check_value(float(value), f"budget.{key}", high=float("inf"))

"""The two joint modes of the low-rank / mixed-level methods, and LLC's rank rule, as problem forms.

- ``lossless`` mode: the best predicted loss at a given compression (minimise loss s.t. a size budget).
- ``compact`` mode: the smallest size with no predicted loss (minimise size s.t. predicted dL <= eps).
- LLC's rank rule: per layer, the smallest rank whose error stays in the lossless neighbourhood
  (the admissible candidates of an ``llc`` problem built on rank levels).
"""

from __future__ import annotations

from typing import Mapping

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Budget, Minimize

MODES = ("lossless", "compact")


def joint_mode(problem: AllocationProblem, mode: str, *, avg_bits: float | None = None,
               max_loss: float = 0.0) -> AllocationProblem:
    """``problem`` in one of the two joint forms (choices unchanged).

    Args:
        mode: "lossless" (needs ``avg_bits``) or "compact" (size minimised, predicted change <= ``max_loss``).
    """
    if mode == "lossless":
        if avg_bits is None:
            raise ProblemError("the lossless mode needs a size budget, e.g. avg_bits=4", field="avg_bits")
        return problem.with_changes(minimize=Minimize.LOSS, budget=Budget(avg_bits=avg_bits))
    if mode == "compact":
        return problem.with_changes(minimize=Minimize.SIZE, budget=Budget(max_loss=max_loss))
    raise ProblemError(f"unknown mode {mode!r}; use one of {MODES}", field="mode")


def llc_ranks(problem: AllocationProblem) -> Mapping[str, int | None]:
    """Per layer, the smallest-storage admissible rank of an ``llc`` problem built on rank levels (None when
    no factorisation is admissible and the layer keeps a plain quantised weight)."""
    if problem.metadata.get("method") != "llc":
        raise ProblemError("llc_ranks needs a problem built with method='llc'", field="method")
    out: dict[str, int | None] = {}
    for layer in problem.layers:
        ranked = [c for c in layer.choices if c.rank is not None and c.loss <= 0]
        out[layer.name] = min(ranked, key=layer.size_bits).rank if ranked else None
    return out

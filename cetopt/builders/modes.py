"""The two problem forms, named by what they minimise (one vocabulary across the code, CLI and README), and
LLC's rank rule.

- ``min-loss``: the best predicted loss at a given compression (minimise loss s.t. a size/BOPs budget); the
  joint low-rank paper's "lossless optimisation".
- ``min-size``: the smallest size whose predicted loss change stays <= eps (minimise size s.t. dL <= eps); with
  eps = 0 this is LLC's lossless form, the joint low-rank paper's "compact optimisation".
- LLC's rank rule: per layer, the smallest rank whose error stays in the lossless neighbourhood
  (the admissible candidates of an ``llc`` problem built on rank levels).
"""

from __future__ import annotations

from typing import Mapping

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Budget, Minimize

MODES = ("min-loss", "min-size")


def joint_mode(problem: AllocationProblem, mode: str, *, avg_bits: float | None = None,
               max_loss: float = 0.0) -> AllocationProblem:
    """``problem`` in one of the two joint forms (choices unchanged).

    Args:
        mode: "min-loss" (needs ``avg_bits``) or "min-size" (size minimised, predicted change <= ``max_loss``).
    """
    if mode == "min-loss":
        if avg_bits is None:
            raise ProblemError("the min-loss form needs a size budget, e.g. avg_bits=4", field="avg_bits")
        return problem.with_changes(minimize=Minimize.LOSS, budget=Budget(avg_bits=avg_bits))
    if mode == "min-size":
        return problem.with_changes(minimize=Minimize.SIZE, budget=Budget(max_loss=max_loss))
    raise ProblemError(f"unknown mode {mode!r}; use one of {MODES}", field="mode")


def llc_ranks(problem: AllocationProblem) -> Mapping[str, int | None]:
    """Per layer, the smallest-storage admissible rank of a problem built on rank levels with a lossless cost model
    (``llc``; CostModel.lossless) (None when no factorisation is admissible and the layer keeps a plain quantised
    weight)."""
    from cetopt.costmodels.registry import cost_model_names, get_cost_model

    method = problem.metadata.get("method")
    if method not in cost_model_names() or not get_cost_model(str(method)).lossless:
        raise ProblemError(f"llc_ranks needs a problem built with a lossless cost model (llc), not {method!r}",
                           field="method")
    out: dict[str, int | None] = {}
    for layer in problem.layers:
        ranked = [c for c in layer.choices if c.rank is not None and c.loss <= 0]
        out[layer.name] = min(ranked, key=layer.size_bits).rank if ranked else None
    return out

"""The solver and the measurement in one loop: the k best plans of a problem (Lawler's partitioning over any exact
backend), each measured on held-out validation data, and the best measured one returned with both objectives.

k-best (Lawler 1972, the scheme of Murty's k-best assignments): after the i-th best plan x of a subproblem S, S
minus {x} is split into disjoint subproblems S_j = {layers 1..j-1 take x's choices, layer j avoids x's choice},
each solved exactly; a heap returns the next best. With an exact backend (dp, the MIPs) the list is the true k
best by the problem's objective, in order (ties in any order).
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Interaction

if TYPE_CHECKING:
    import torch

    from cetopt.builders.second_order import BuiltProblem


@dataclass(frozen=True)
class RankedPlan:
    """One plan of the k best.

    Attributes:
        rank: 0 for the solver's optimum, 1 for the next best, ...
        choices: layer -> index into the ORIGINAL problem's ``layer.choices``; bits: layer -> bit-width.
        objective: the problem's objective (predicted loss, or size in bits when minimising size).
        predicted_loss: total predicted loss change; size_bits: packed size in bits.
        measured: the measured objective (validation loss change), None until measured.
    """

    rank: int
    choices: Mapping[str, int]
    bits: Mapping[str, int]
    objective: float
    predicted_loss: float
    size_bits: float
    measured: float | None = None


@dataclass(frozen=True)
class RerankResult:
    """The k best plans (solver order) with their measurements; ``best`` is the best measured one."""

    plans: tuple[RankedPlan, ...]
    best: RankedPlan

    @property
    def solver_best(self) -> RankedPlan:
        return self.plans[0]


def restrict(problem: AllocationProblem, keep: Mapping[str, Sequence[int]]) -> AllocationProblem:
    """``problem`` with layer l's choices reduced to the indices ``keep[l]`` (interaction matrices sliced)."""
    def kept(name: str, count: int) -> list[int]:
        return list(keep.get(name, range(count)))

    layers = tuple(dataclasses.replace(layer, choices=tuple(layer.choices[i]
                                                            for i in kept(layer.name, len(layer.choices))))
                   if layer.name in keep else layer for layer in problem.layers)
    sizes = {layer.name: len(layer.choices) for layer in problem.layers}
    terms = tuple(Interaction(a=t.a, b=t.b, loss=tuple(tuple(t.loss[i][j] for j in kept(t.b, sizes[t.b]))
                                                       for i in kept(t.a, sizes[t.a])))
                  for t in problem.interactions)
    return problem.with_changes(layers=layers, interactions=terms)


def _solve(problem: AllocationProblem, solver: str):  # type: ignore[no-untyped-def]
    from cetopt.solvers.api import solve

    try:
        result = solve(problem, solver)
    except ProblemError:  # e.g. tied layers left with no common bit-width: this part of the partition is empty
        return None
    return result if result.success else None


def k_best(problem: AllocationProblem, k: int, solver: str = "dp") -> list[RankedPlan]:
    """The ``k`` best plans of ``problem`` in objective order (fewer when fewer are feasible).

    Raises:
        ProblemError(field="k"): k < 1.
    """
    if not isinstance(k, int) or k < 1:
        raise ProblemError(f"expected an integer >= 1, got {k!r}", field="k")
    original = {layer.name: {c.level: i for i, c in enumerate(layer.choices)} for layer in problem.layers}
    first = _solve(problem, solver)
    if first is None:
        return []
    heap = [(float(first.objective), 0, problem, first)]
    counter, out = 1, []
    while heap and len(out) < k:
        _, _, sub, result = heapq.heappop(heap)
        levels = {layer.name: layer.choices[result.choices[layer.name]].level for layer in sub.layers}
        out.append(RankedPlan(rank=len(out), choices={n: original[n][lv] for n, lv in levels.items()},
                              bits=dict(result.bits), objective=float(result.objective),
                              predicted_loss=float(result.loss), size_bits=float(result.size_bits)))
        for j, layer in enumerate(sub.layers):
            taken = result.choices[layer.name]
            if len(layer.choices) == 1:
                continue
            keep = {prev.name: [result.choices[prev.name]] for prev in sub.layers[:j]}
            keep[layer.name] = [i for i in range(len(layer.choices)) if i != taken]
            child = restrict(sub, keep)
            answer = _solve(child, solver)
            if answer is not None:
                heapq.heappush(heap, (float(answer.objective), counter, child, answer))
                counter += 1
    return out


def rerank(built: "BuiltProblem", measure: Callable[[Mapping[str, "torch.Tensor"]], float | None], k: int,
           solver: str = "dp") -> RerankResult:
    """The k best plans of ``built.problem``, each measured by ``measure(compressed weights)`` (lower is better,
    e.g. :meth:`cetopt.measure.Measurer.validation_dloss`); the best measured plan is returned with both objectives.

    Raises:
        ProblemError(field="problem"): no feasible plan; ProblemError(field="validation"): ``measure`` gave None.
    """
    plans = k_best(built.problem, k, solver)
    if not plans:
        raise ProblemError("no feasible plan to re-rank; loosen the budget", field="problem")
    measured = []
    for plan in plans:
        value = measure(built.weights_for_choices(plan.choices))
        if value is None:
            raise ProblemError("re-ranking needs held-out validation batches: give ModelSpec.validation",
                               field="validation")
        measured.append(dataclasses.replace(plan, measured=float(value)))
    best = min(measured, key=lambda p: (p.measured, p.rank))
    return RerankResult(plans=tuple(measured), best=best)


def rerank_report(target: str, k: int, *, avg_bits: float = 3.0, method: str | None = None,
                  solver: str = "dp") -> str:
    """``cetopt demo TARGET --rerank K``: the k best plans of the model's problem at ``avg_bits``, each with its
    predicted and its measured validation loss change, and which one re-ranking returns (text table)."""
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.tables import format_table
    from cetopt.workflow import build_for

    spec = load_model_spec(target)
    method = method or DEFAULT_COST_MODEL
    built = build_for(spec, method=method, budget=Budget(avg_bits=avg_bits))
    measurer = Measurer(spec)
    result = rerank(built, measurer.validation_dloss, k, solver)
    rows = [[p.rank, f"{p.size_bits / built.problem.total_params:.3f}", f"{p.predicted_loss:.6f}", f"{p.measured:.6f}",
             "<- returned" if p is result.best else ""] for p in result.plans]
    table = format_table(["rank", "avg_bits", "predicted_dL (calibration)", "measured_dL (validation)", ""], rows)
    return (f"{spec.name}: the {len(result.plans)} best plans of the {method} problem at {avg_bits} avg bits "
            f"({solver}), re-ranked by the measured validation loss change:\n{table}\n"
            f"returned: rank {result.best.rank} (predicted {result.best.predicted_loss:.6f}, measured "
            f"{result.best.measured:.6f}); the solver's optimum measured {result.solver_best.measured:.6f}")

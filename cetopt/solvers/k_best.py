"""The k best plans of a problem in objective order (Lawler's partition of the solution space, each part solved
exactly by a registered backend): what ``cetopt plan`` measures beside its pool, and what the measured search seeds
from. Torch-free, like every solver."""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from typing import Mapping, Sequence

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem, Interaction


@dataclass(frozen=True)
class RankedPlan:
    """One plan of the k best.

    Attributes:
        rank: 0 for the solver's optimum, 1 for the next best, ...; None for a plan of the pool.
        choices: layer -> index into the ORIGINAL problem's ``layer.choices``; bits: layer -> bit-width.
        objective: the problem's objective (predicted loss, or size in bits when minimising size).
        predicted_loss: total predicted loss change (by the problem's cost model, for pool plans too);
            size_bits: packed size in bits.
        measured: the measured objective (validation loss change), None until measured.
        source: where the plan came from: the problem's cost model for the k best, the pool member's name else.
        same_as: the pool members whose plan is this one (measured once, here).
    """

    rank: int | None
    choices: Mapping[str, int]
    bits: Mapping[str, int]
    objective: float
    predicted_loss: float
    size_bits: float
    measured: float | None = None
    source: str = ""
    same_as: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``cet-upper#0`` for the solver's optimum, ``hawq-v3`` for a pool plan, ``cet-upper#0 (= hawq-v3)`` when
        a pool member made the same plan."""
        name = self.source if self.rank is None else f"{self.source or 'solver'}#{self.rank}"
        return name + (f" (= {', '.join(self.same_as)})" if self.same_as else "")


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


def solve_or_none(problem: AllocationProblem, solver: str):  # type: ignore[no-untyped-def]
    """The backend's answer, or None when the problem has no plan (infeasible, or refused as inconsistent)."""
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
    first = solve_or_none(problem, solver)
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
            answer = solve_or_none(child, solver)
            if answer is not None:
                heapq.heappush(heap, (float(answer.objective), counter, child, answer))
                counter += 1
    return out

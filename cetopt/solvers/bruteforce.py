"""Exhaustive enumeration: the independent truth that every exact backend is tested against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.result import Outcome, Status


@dataclass(frozen=True)
class BruteForceOptions:
    """Options of the bruteforce backend.

    Attributes:
        max_combinations: refuse problems with more allocations than this.
    """

    max_combinations: int = 2_000_000


def combinations(compiled: CompiledProblem, stop: int) -> int:
    """The number of allocations of ``compiled``, counted with Python integers; stops once past ``stop``."""
    count = 1
    for group in compiled.groups:
        count *= int(group.n_options)
        if count > stop:
            break
    return count


class BruteForceSolver(Solver):
    """Enumerates every allocation (vectorised); for tests and tiny problems only."""

    name = "bruteforce"
    description = "exhaustive enumeration (tiny problems; the reference in tests)"
    capabilities = Capabilities(exact=True, proves_bound=True, interactions=True)
    Options = BruteForceOptions

    def unsupported(self, compiled: CompiledProblem) -> list[str]:
        reasons = super().unsupported(compiled)
        limit = BruteForceOptions.max_combinations
        count = combinations(compiled, limit)
        if count > limit:  # exact integers: 10,000 layers of 3 choices is 3^10000, not a float overflow
            reasons.append(f"it would enumerate more than {limit} allocations ({len(compiled.groups)} groups); "
                           "use an exact backend that scales (dp, highs, ortools)")
        return reasons

    def run(self, compiled: CompiledProblem, options: BruteForceOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        if combinations(compiled, options.max_combinations) > options.max_combinations:
            return Outcome(Status.ERROR, message=f"more than max_combinations={options.max_combinations} allocations; "
                                                 "raise the option or use dp / highs / ortools")
        shape = [g.n_options for g in compiled.groups]
        grid = np.indices(shape).reshape(len(shape), -1).T  # (N, G)
        loss = sum(g.loss[grid[:, i]] for i, g in enumerate(compiled.groups))
        loss = loss + sum(p.matrix[grid[:, p.a], grid[:, p.b]] for p in compiled.pairs)
        size = sum(g.size[grid[:, i]] for i, g in enumerate(compiled.groups))
        ok = np.ones(len(grid), dtype=bool)
        if compiled.max_size is not None:
            ok &= size <= compiled.max_size * (1 + 1e-12) + 1e-12
        if compiled.max_bops is not None:
            bops = sum(g.bops[grid[:, i]] for i, g in enumerate(compiled.groups))  # type: ignore[index]
            ok &= bops <= compiled.max_bops * (1 + 1e-12) + 1e-12
        if compiled.max_loss is not None:
            ok &= loss <= compiled.max_loss + 1e-12 * max(1.0, abs(compiled.max_loss))
        if not ok.any():
            return Outcome(Status.INFEASIBLE, message=f"none of {len(grid)} allocations meets the budgets")
        objective = np.where(ok, size if compiled.minimize is Minimize.SIZE else loss, np.inf)
        best = int(np.argmin(objective))
        return Outcome(Status.OPTIMAL, choice_index=grid[best].astype(np.int64), bound=float(objective[best]),
                       extra={"combinations": len(grid)})


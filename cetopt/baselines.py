"""The baseline allocations every comparison uses: uniform precision and HAWQ-V3 (trace x |Q(W) - W|^2, solved
exactly), built on the same model as the plan they are compared with."""

from __future__ import annotations

from typing import Mapping, Sequence

from cetopt.modelspec import ModelSpec
from cetopt.problem.model import AllocationProblem, Budget


def uniform_bits(problem: AllocationProblem, bits: float) -> dict[str, int] | None:
    """Every layer at ``bits`` (None when ``bits`` is not an integer offered by every layer)."""
    if not float(bits).is_integer():
        return None
    b = int(bits)
    if any(b not in {c.bits for c in layer.choices if c.rank is None and c.terms == 1} for layer in problem.layers):
        return None
    return {layer.name: b for layer in problem.layers}


def hawq_v3_problem(spec: ModelSpec, bits: Sequence[int], **options: object) -> AllocationProblem:
    """HAWQ-V3's problem of ``spec``: Omega = Tr(H)/n |Q_b(W) - W|^2 per layer and candidate bit-width."""
    from cetopt.workflow import build_for

    return build_for(spec, method="hawq-v3", bits=bits, budget=Budget(avg_bits=4.0), **options).problem  # type: ignore[arg-type]


def hawq_v3_bits(problem: AllocationProblem, avg_bits: float, solver: str = "dp") -> Mapping[str, int] | None:
    """HAWQ-V3's plan at ``avg_bits`` on its own problem (None when infeasible)."""
    from cetopt.solvers.api import solve

    result = solve(problem.with_budget(Budget(avg_bits=avg_bits)), solver)
    return dict(result.bits) if result.success else None

"""The common step of integer-valued tables: every total of such a table is a multiple of it.

Sizes (params x bits) and BOPs (macs x bits x activation bits) are exact integers, and on real networks they
share a large common factor (channel counts are multiples of 8, 16, 32...; a problem with three layer sizes
4,096 / 65,536 / 589,824 has step 4,096). Any allocation's total is then a multiple of the step ``d``:

- a cap ``Q`` on such a total may be lowered to ``d * floor(Q / d)`` without losing a feasible allocation;
- a lower bound ``B`` on such a total (the objective when minimising size) may be raised to ``d * ceil(B / d)``.

Both are exact, and for the dp backend they are the difference between seconds and minutes: the Lagrangian
bound otherwise lets the allocation fill the cap to the last bit, while every real allocation leaves at least
``Q mod d`` unused, and closing that gap by enumeration means a DP over thousands of near-free groups.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_INTEGERS = 2.0**53  # float64 holds every integer below this exactly


def common_step(table: np.ndarray) -> int | None:
    """Greatest common divisor of the finite entries of ``table``, or None when they are not all exact
    non-negative integers (or all zero): then no step can be used.

    Args:
        table: (G, K) float array, padded entries +inf.
    """
    values = table[np.isfinite(table)]
    if values.size == 0 or values.min() < 0 or values.max() >= EXACT_INTEGERS:
        return None
    if not np.array_equal(values, np.floor(values)):
        return None
    step = int(np.gcd.reduce(values.astype(np.int64)))  # one pass; no np.unique, whose sort dominates at 10^5+
    return step if step > 0 else None


def cap_down(cap: float, step: int | None) -> float:
    """The largest multiple of ``step`` that is at most ``cap`` (``cap`` itself without a step or when it is
    not finite). ``cap`` should already include any tolerance the caller accepts."""
    if step is None or not math.isfinite(cap) or cap >= EXACT_INTEGERS:
        return cap
    return float(step * math.floor(cap / step))


def bound_up(bound: float, step: int | None) -> float:
    """The smallest multiple of ``step`` that is at least ``bound`` less its float noise (1e-9 relative:
    a bound summed over 10^6 groups may sit a hair above the exact value it stands for); ``bound`` itself
    without a step or when it is not finite."""
    if step is None or not math.isfinite(bound) or abs(bound) >= EXACT_INTEGERS:
        return bound
    return max(bound, float(step * math.ceil((bound - 1e-9 * abs(bound)) / step)))

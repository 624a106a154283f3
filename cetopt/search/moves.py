"""Level-switch moves on the compiled problem (EvoPress, arXiv 2410.14649, Sec. 3: one unit up a level, others
down, so the total size stays at the budget).

A group's *levels* are its options ordered by size (a tie group moves all its members together, and options the
per-layer bit limits forbid are not there, so every move keeps ties and limits). Here layers differ in size, so a
raise is paid for by lowering other groups until the plan fits the budget again, then spare room is filled by
raising groups that still fit: the plan stays within, and close to, the budget.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cetopt.search.evaluator import Evaluator


class Levels:
    """Each group's options by size: ``order[g]`` (smallest first) and ``rank[g][o]`` (an option's level)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        groups = evaluator.compiled.groups
        self.order = [np.lexsort((g.loss, g.size)) for g in groups]
        self.rank = []
        for order in self.order:
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            self.rank.append(rank)
        self.n_groups = len(groups)

    def up(self, g: int, o: int) -> int | None:
        """The next larger option of group g, or None at the top."""
        r = self.rank[g][o] + 1
        return int(self.order[g][r]) if r < len(self.order[g]) else None

    def down(self, g: int, o: int) -> int | None:
        """The next smaller option of group g, or None at the bottom."""
        r = self.rank[g][o] - 1
        return int(self.order[g][r]) if r >= 0 else None


def level_switch(levels: Levels, option: np.ndarray, rng: np.random.Generator, steps: int = 1) -> np.ndarray | None:
    """``option`` after ``steps`` level switches: a random group one level up, random other groups one level down
    until the plan fits, then random groups one level up while they fit. None when no switch fits."""
    ev = levels.evaluator
    child = np.array(option, dtype=np.int64)
    for _ in range(steps):
        raisable = [g for g in range(levels.n_groups) if levels.up(g, child[g]) is not None]
        if not raisable:
            return None
        a = int(rng.choice(raisable))
        child[a] = levels.up(a, child[a])  # type: ignore[assignment]
        lowered: set[int] = set()
        while not ev.feasible(child):
            lowerable = [g for g in range(levels.n_groups) if g != a and levels.down(g, child[g]) is not None]
            if not lowerable:
                return None
            b = int(rng.choice(lowerable))
            child[b] = levels.down(b, child[b])  # type: ignore[assignment]
            lowered.add(b)
        for g in rng.permutation(levels.n_groups):
            if g in lowered or g == a:
                continue
            up = levels.up(int(g), child[g])
            if up is None:
                continue
            previous = child[g]
            child[g] = up
            if not ev.feasible(child):
                child[g] = previous
    if np.array_equal(child, option):
        return None
    return child


def mutation_steps(rng: np.random.Generator, most: int = 3) -> int:
    """How many switches one mutation makes: min of two uniform draws in 1..most (few are likelier, EvoPress)."""
    return int(min(rng.integers(1, most + 1), rng.integers(1, most + 1)))


def switch_neighbours(levels: Levels, option: np.ndarray,
                      value: Callable[[np.ndarray], float] | None = None) -> list[tuple[float, np.ndarray]]:
    """Every feasible plan one switch away from ``option``: one group one level up (alone if it fits, else with
    one other group one level down), and one group one level down alone. Returned with their change by ``value``
    (default: the surrogate, compiled loss units), most promising first."""
    ev = levels.evaluator
    value = value or ev.predicted
    base = value(option)
    out: list[tuple[float, np.ndarray]] = []
    seen: set[tuple[int, ...]] = set()

    def add(child: np.ndarray) -> None:
        key = tuple(int(c) for c in child)
        if key in seen or not ev.feasible(child):
            return
        seen.add(key)
        out.append((value(child) - base, child))

    for a in range(levels.n_groups):
        up = levels.up(a, option[a])
        down = levels.down(a, option[a])
        if down is not None:
            child = option.copy()
            child[a] = down
            add(child)
        if up is None:
            continue
        raised = option.copy()
        raised[a] = up
        if ev.feasible(raised):
            add(raised)
            continue
        for b in range(levels.n_groups):
            lower = levels.down(b, option[b]) if b != a else None
            if lower is None:
                continue
            child = raised.copy()
            child[b] = lower
            add(child)
    out.sort(key=lambda dc: dc[0])
    return out

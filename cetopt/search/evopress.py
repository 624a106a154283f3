"""EvoPress-style search (Sieberling et al., arXiv 2410.14649, Alg. 1): a (1 + lambda) evolution over per-layer
levels with level-switch mutations that keep the plan within the size budget, and selection by successive halving
on growing random subsets of the calibration batches.

Differences from the paper, and why: the parent starts as the best measured seed (the surrogate's optimum, the
other backends' and the baselines' plans, by a first tournament) instead of a uniform plan, since the exact
solvers give good starting points for free; layers differ in size, so a switch is paid for by lowering other
groups until the plan fits (:func:`cetopt.search.moves.level_switch`). The parent is measured beside the best
offspring on the same, largest batches of each generation and keeps its place on a tie (elitism).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cetopt.search.base import Seed
from cetopt.search.evaluator import Evaluator, batch_order, option_key, tournament
from cetopt.search.moves import Levels, level_switch, mutation_steps


@dataclass(frozen=True)
class EvoPressOptions:
    """offspring: children per generation (lambda); first_batches: batches of the first halving stage (0: an
    eighth of the calibration batches, at least 1); max_switches: the most level switches one mutation makes."""

    offspring: int = 8
    first_batches: int = 0
    max_switches: int = 3


def first_stage(n_batches: int, requested: int) -> int:
    return requested if requested > 0 else max(1, n_batches // 8)


class EvoPress:
    name = "evopress"
    description = "level-switch mutations within the budget, successive-halving selection on calibration subsets"
    Options = EvoPressOptions

    def search(self, evaluator: Evaluator, seeds: Sequence[Seed], options: EvoPressOptions,
               rng: np.random.Generator) -> list[np.ndarray]:
        first = first_stage(evaluator.n_batches, options.first_batches)
        levels = Levels(evaluator)
        order = batch_order(rng, evaluator.n_batches)
        ranked = tournament(evaluator, [s.option for s in seeds], order, first)
        parent = ranked[0]
        evaluator.note(parent, "seeds")
        failures = 0
        while True:
            children: list[np.ndarray] = []
            seen = {option_key(parent)}
            for _ in range(options.offspring * 4):
                if len(children) == options.offspring:
                    break
                child = level_switch(levels, parent, rng, mutation_steps(rng, options.max_switches))
                if child is not None and option_key(child) not in seen:
                    seen.add(option_key(child))
                    children.append(child)
            if not children:
                failures += 1
                if failures > 3:  # no switch fits the budget from this parent
                    return [parent]
                continue
            order = batch_order(rng, evaluator.n_batches)
            spent = evaluator.forwards
            best = tournament(evaluator, children, order, first, keep=parent)[0]
            if evaluator.forwards == spent:  # every child measured before on these batches: a tiny plan space
                failures += 1
                if failures > 3:
                    return [parent]
            if option_key(best) != option_key(parent):
                parent = best
                evaluator.note(parent, "generation: offspring won")

"""Measured local search from many starts: every backend's plan, the exact solver's k best and the baselines' plans
(the seeds) are ranked by a successive-halving tournament; from the best, the search climbs by single level
switches (:func:`cetopt.search.moves.switch_neighbours`), measuring each step's most promising neighbours by the
surrogate (the curvature prior) plus a few random ones against the incumbent on the same batches. At a local
optimum it moves to the next seed, and when the seeds are spent it restarts from a perturbed best optimum
(iterated local search)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cetopt.search.base import Seed
from cetopt.search.evaluator import Evaluator, batch_order, option_key, tournament
from cetopt.search.evopress import first_stage
from cetopt.search.moves import Levels, level_switch, switch_neighbours


@dataclass(frozen=True)
class LocalOptions:
    """neighbours: plans measured per step; explore: the share of them drawn at random (the rest are the
    surrogate's most promising); patience: steps without a better neighbour before the climb stops;
    first_batches: batches of the first halving stage (0: an eighth of the calibration batches);
    kick: level switches that perturb the best optimum for a restart."""

    neighbours: int = 8
    explore: float = 0.25
    patience: int = 2
    first_batches: int = 0
    kick: int = 3


class LocalSearch:
    name = "local"
    description = "multi-start measured local search over single level switches, seeded by every plan at hand"
    Options = LocalOptions

    def search(self, evaluator: Evaluator, seeds: Sequence[Seed], options: LocalOptions,
               rng: np.random.Generator) -> list[np.ndarray]:
        first = first_stage(evaluator.n_batches, options.first_batches)
        levels = Levels(evaluator)
        order = batch_order(rng, evaluator.n_batches)
        winners = tournament(evaluator, [s.option for s in seeds], order, first)
        rest = sorted((s.option for s in seeds if option_key(s.option) not in {option_key(w) for w in winners}),
                      key=lambda o: evaluator.estimate(o))
        starts = list(winners) + rest
        optima: list[np.ndarray] = []
        rejected: set[tuple[int, ...]] = set()
        evaluator.note(starts[0], "seeds")
        restarts_without_change = idle = 0
        while idle < 10:  # rounds that measured nothing new: the plan space near the optima is exhausted
            spent = evaluator.forwards
            if starts:
                start = starts.pop(0)
            else:
                best = min(optima, key=lambda o: evaluator.estimate(o)) if optima else winners[0]
                start = level_switch(levels, best, rng, options.kick)
                if start is None:
                    return optima or list(winners)
            optimum = self._climb(evaluator, levels, start, options, rng, first, rejected)
            if option_key(optimum) in {option_key(o) for o in optima}:
                restarts_without_change += 1
                if restarts_without_change > 5 and not starts:
                    break
            else:
                optima.append(optimum)
            optima.sort(key=lambda o: evaluator.estimate(o))
            evaluator.note(optima[0], "local optimum")
            idle = idle + 1 if evaluator.forwards == spent else 0
        return optima

    def _climb(self, evaluator: Evaluator, levels: Levels, incumbent: np.ndarray, options: LocalOptions,
               rng: np.random.Generator, first: int, rejected: set[tuple[int, ...]]) -> np.ndarray:
        stall = 0
        while stall < options.patience:
            found = [c for _, c in switch_neighbours(levels, incumbent) if option_key(c) not in rejected]
            if not found:
                break
            random_count = int(round(options.neighbours * options.explore))
            picks = found[:options.neighbours - random_count]
            others = found[len(picks):]
            if others and random_count:
                picks += [others[i] for i in rng.choice(len(others), size=min(random_count, len(others)),
                                                        replace=False)]
            spent = evaluator.forwards
            best = tournament(evaluator, picks, batch_order(rng, evaluator.n_batches), first, keep=incumbent)[0]
            if option_key(best) != option_key(incumbent):
                incumbent, stall = best, 0  # noted only as a local optimum: the evaluator's incumbents are global bests
            else:
                rejected.update(option_key(p) for p in picks)
                stall += 1 if evaluator.forwards > spent else options.patience
        return incumbent

"""Budgeted, cached measurement of plans for the search strategies.

Plans are option vectors of the compiled problem (one option per tie group). The evaluator measures a plan one
calibration batch at a time through the injected ``measure(choices, (batch,))`` and keeps every value, so comparing
two plans on the same batches (common random numbers) costs only the batches not measured yet, and the mean over a
plan's batches is exactly the loss change on those batches (each batch weighs the same, as in
:func:`cetopt.measure.mean_loss`). It counts forward passes, shows a progress bar and raises :class:`BudgetSpent`
before a measurement would pass the forward budget (less the reserve kept for the final selection) or after the
wall-clock limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from cetopt.problem.compiled import CompiledProblem, fits
from cetopt.search.base import HistoryPoint, PlanMeasurement

log = logging.getLogger(__name__)


class BudgetSpent(Exception):
    """The search phase's forward or time budget is spent (caught by :func:`cetopt.search.api.run_search`)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def option_key(option: np.ndarray | Sequence[int]) -> tuple[int, ...]:
    return tuple(int(o) for o in option)


class Evaluator:
    """Measures option vectors of ``compiled`` within a budget (see the module docstring).

    Args:
        compiled: the compiled problem (its groups' options, sizes and limits).
        measurement: how plans are measured (calibration batches, optional validation and its cost).
        forwards: the search phase's forward budget (the final selection's reserve already taken off).
        seconds: the search phase's wall-clock limit, or None.
        progress: show a tqdm bar over the forward budget.
    """

    def __init__(self, compiled: CompiledProblem, measurement: PlanMeasurement, *, forwards: int,
                 seconds: float | None = None, progress: bool = False, total_forwards: int | None = None) -> None:
        self.compiled, self._measure, self.n_batches = compiled, measurement.measure, int(measurement.n_batches)
        self.limit_forwards, self.limit_seconds = int(forwards), seconds
        self.validate, self.validation_forwards = measurement.validate, int(measurement.validation_forwards)
        self.values: dict[tuple[int, ...], dict[int, float]] = {}
        self.validation: dict[tuple[int, ...], float] = {}
        self.forwards = 0
        self.start = time.perf_counter()
        self.history: list[HistoryPoint] = []
        self.incumbents: list[tuple[int, ...]] = []  # the strategy's successive bests (last = current)
        self.search_phase = True
        self._size = compiled.padded("size", np.inf)
        self._loss = compiled.padded("loss", np.inf)
        self._bops = compiled.padded("bops", np.inf) if compiled.max_bops is not None else None
        self._rows = np.arange(compiled.n_groups)
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_forwards or forwards, unit="fwd", desc="search", leave=False)

    # ------------------------------------------------------------------ problem facts
    def size(self, option: np.ndarray) -> float:
        """Size in bits of ``option``."""
        return float(self._size[self._rows, option].sum())

    def predicted(self, option: np.ndarray) -> float:
        """The surrogate's value of ``option`` (compiled loss units, interactions included)."""
        return float(self.compiled.objective_values(option)[1])

    def feasible(self, option: np.ndarray) -> bool:
        """Within the size and BOPs budgets (the final answer is re-checked by the problem model too)."""
        if not fits(self.size(option), self.compiled.max_size):
            return False
        if self._bops is not None and not fits(float(self._bops[self._rows, option].sum()), self.compiled.max_bops):
            return False
        if self.compiled.max_loss is not None:
            return fits(self.predicted(option), self.compiled.max_loss)
        return True

    def choices(self, option: np.ndarray) -> dict[str, int]:
        return self.compiled.to_choices(option)

    # ------------------------------------------------------------------ budget
    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> int:
        """Forward passes left to the current phase."""
        return self.limit_forwards - self.forwards

    def _charge(self, count: int) -> None:
        if self.search_phase:
            if self.forwards + count > self.limit_forwards:
                raise BudgetSpent("forwards")
            if self.limit_seconds is not None and self.seconds > self.limit_seconds:
                raise BudgetSpent("seconds")
        self.forwards += count
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    # ------------------------------------------------------------------ measurements
    def known(self, option: np.ndarray) -> Mapping[int, float]:
        """Batch index -> measured value of ``option`` (what is cached)."""
        return self.values.get(option_key(option), {})

    def missing(self, option: np.ndarray, batches: Sequence[int]) -> int:
        known = self.known(option)
        return sum(1 for b in batches if int(b) not in known)

    def mean(self, option: np.ndarray, batches: Sequence[int]) -> float:
        """Mean measured loss change of ``option`` over ``batches`` (measuring the ones not cached).

        Raises:
            BudgetSpent: the budget does not cover the missing batches (nothing is measured then).
        """
        key = option_key(option)
        known = self.values.setdefault(key, {})
        todo = [int(b) for b in batches if int(b) not in known]
        if todo:
            self._charge(0)  # the time limit, before spending anything
            if self.search_phase and self.forwards + len(todo) > self.limit_forwards:
                raise BudgetSpent("forwards")
            choices = self.choices(np.asarray(key))
            for b in todo:
                self._charge(1)
                known[b] = float(self._measure(choices, (b,)))
        return float(np.mean([known[int(b)] for b in batches]))

    def full(self, option: np.ndarray) -> float:
        """Mean over every calibration batch."""
        return self.mean(option, range(self.n_batches))

    def validated(self, option: np.ndarray) -> float | None:
        """The validation measurement (cached), or None without one."""
        if self.validate is None:
            return None
        key = option_key(option)
        if key not in self.validation:
            self._charge(self.validation_forwards)
            self.validation[key] = float(self.validate(self.choices(np.asarray(key))))
        return self.validation[key]

    def estimate(self, option: np.ndarray) -> tuple[float, int]:
        """(mean over the cached batches, how many), (inf, 0) when never measured."""
        known = self.known(option)
        return (float(np.mean(list(known.values()))), len(known)) if known else (float("inf"), 0)

    # ------------------------------------------------------------------ bookkeeping
    def note(self, option: np.ndarray, event: str) -> None:
        """Record ``option`` as the strategy's current best, with a history point."""
        key = option_key(option)
        if not self.incumbents or self.incumbents[-1] != key:
            self.incumbents.append(key)
        value, _ = self.estimate(option)
        self.history.append(HistoryPoint(forwards=self.forwards, seconds=self.seconds, best_calibration=value,
                                         event=event))

    def ranked(self) -> list[np.ndarray]:
        """Every measured plan, best first: the strategy's incumbents (latest first), then the others by their
        mean over their cached batches among those measured on the most batches."""
        out = [np.asarray(k) for k in reversed(self.incumbents)]
        seen = set(self.incumbents)
        rest = [(k, v) for k, v in self.values.items() if v and k not in seen]
        rest.sort(key=lambda kv: (-len(kv[1]), float(np.mean(list(kv[1].values())))))
        out += [np.asarray(k) for k, _ in rest]
        return out

    def describe(self) -> dict[str, Any]:
        return {"plans_measured": len([v for v in self.values.values() if v]), "forwards": self.forwards,
                "seconds": self.seconds}


def option_of(evaluator: Evaluator, choices: dict[str, int]) -> np.ndarray | None:
    """The option vector of a plan given as layer -> choice index, None when a group has no such option."""
    names = evaluator.compiled.problem.layer_names
    option = []
    for group in evaluator.compiled.groups:
        row = np.array([choices[names[m]] for m in group.members])
        hits = np.flatnonzero((group.options == row).all(axis=1))
        if hits.size == 0:
            return None
        option.append(int(hits[0]))
    return np.array(option, dtype=np.int64)


def batch_order(rng: np.random.Generator, n_batches: int) -> np.ndarray:
    """A fresh random order of the calibration batches (each generation / round draws one)."""
    return rng.permutation(n_batches)


def halving_stages(n_candidates: int, n_batches: int, first: int) -> list[tuple[int, int]]:
    """Successive halving: (batches, survivors) per stage, batches doubling from ``first`` (capped at
    ``n_batches``) and survivors halving until one is left."""
    stages = []
    batches, alive = max(1, min(first, n_batches)), n_candidates
    while alive > 1:
        alive = max(1, (alive + 1) // 2)
        stages.append((batches, alive))
        batches = min(n_batches, batches * 2)
    return stages or [(max(1, min(first, n_batches)), 1)]


def tournament(evaluator: Evaluator, candidates: Sequence[np.ndarray], order: np.ndarray, first: int,
               keep: np.ndarray | None = None) -> list[np.ndarray]:
    """Successive halving over ``candidates`` on growing prefixes of the batch ``order`` (EvoPress's selection):
    every survivor of a stage is measured on the stage's batches, the better half goes on. ``keep`` (the parent)
    is measured at every stage and survives to the end, so the final comparison is parent vs the best offspring
    on the same, largest batches. Returns the last stage's plans, best first (a tie keeps the parent, then the
    earlier candidate)."""
    alive = list(candidates)
    batches = order[:max(1, min(first, len(order)))]
    for count, survivors in halving_stages(len(alive), len(order), first):
        batches = order[:count]
        scored = sorted(enumerate(alive), key=lambda ia: (evaluator.mean(ia[1], batches), ia[0]))
        alive = [a for _, a in scored[:survivors]]
    final = ([keep] if keep is not None else []) + [a for a in alive
                                                       if keep is None or option_key(a) != option_key(keep)]
    scored = sorted(enumerate(final), key=lambda ia: (evaluator.mean(ia[1], batches), ia[0]))
    return [a for _, a in scored]

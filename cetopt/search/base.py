"""The measured search's contract: what a strategy is given, what it may spend, and what it returns.

A strategy searches the plans of an :class:`~cetopt.problem.model.AllocationProblem` by *measuring* them, not by
trusting the problem's additive costs (the surrogate). It works on the compiled problem (tie groups folded, so
every option vector it builds keeps ties and per-layer bit limits) through an
:class:`~cetopt.search.evaluator.Evaluator`, which measures plans batch by batch, caches every (plan, batch) value,
counts forward passes and stops the strategy when its budget is spent. A strategy is one module and one line in :mod:`cetopt.search.registry`::

    class MyStrategy:
        name = "mine"
        Options = MyOptions  # a frozen dataclass of the strategy's knobs

        def search(self, evaluator, seeds, options, rng) -> list[np.ndarray]:
            ...  # measure, return contenders (option vectors), best first

:func:`cetopt.search.api.run_search` then measures the surrogate's optimum and the first contenders on the whole
calibration set and on validation, returns the best on validation (calibration without one: never the test set),
re-checks it against the problem like any solver answer and records what it cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

DEFAULT_STRATEGY = "evopress"  # what `cetopt plan --search` runs when no strategy is named

# measure(choices, subset) -> the mean loss change of the plan (layer -> choice index into ``layer.choices``) over
# the calibration batches whose indices are ``subset`` (each batch weighs the same); every index costs one forward
PlanMeasure = Callable[[Mapping[str, int], Sequence[int]], float]
# validate(choices) -> the plan's loss change on the held-out validation batches
PlanValidate = Callable[[Mapping[str, int]], float]


@dataclass(frozen=True)
class PlanMeasurement:
    """How a search measures plans.

    Attributes:
        measure: ``measure(choices, subset)``, the plan's mean loss change over calibration batches ``subset``.
        n_batches: how many calibration batches ``measure`` takes (indices 0..n_batches-1).
        validate: ``validate(choices)``, the plan's loss change on held-out validation batches; None: the finalists
            are compared on the whole calibration set (say so when reporting).
        validation_forwards: what one ``validate`` call costs in forward passes.
    """

    measure: PlanMeasure
    n_batches: int
    validate: PlanValidate | None = None
    validation_forwards: int = 0

    @property
    def per_plan(self) -> int:
        """Forward passes to measure one plan on every calibration batch and on validation."""
        return self.n_batches + (self.validation_forwards if self.validate is not None else 0)


@dataclass(frozen=True)
class Seeding:
    """Where a search starts, besides the surrogate's exact optimum (always the first seed).

    Attributes:
        extra: more starting plans (label -> layer -> choice index), e.g. the baselines'.
        k: the exact solver's k best join the seeds.
        backends: every installed backend's plan joins them.
        solver: the exact backend for the surrogate's optimum (None: dp where it applies).
    """

    extra: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    k: int = 4
    backends: bool = True
    solver: str | None = None


@dataclass(frozen=True)
class SearchBudget:
    """What a search may spend.

    Attributes:
        forwards: forward passes (one calibration batch of one plan = 1; one validation pass of one plan = the
            number of validation batches), the final selection included.
        seconds: wall-clock seconds for the search phase (None: no limit); the final selection of at most
            ``finalists`` plans runs after it, bounded by ``forwards``.
        finalists: plans measured on the whole calibration set and on validation at the end (the surrogate's
            optimum is always one of them, so the search never returns a plan that validates worse than it).
    """

    forwards: int
    seconds: float | None = None
    finalists: int = 3


@dataclass(frozen=True)
class HistoryPoint:
    """One step of a search: after ``forwards`` forward passes and ``seconds`` seconds, the best calibration
    estimate so far (mean over the batches the plan was measured on) and what happened."""

    forwards: int
    seconds: float
    best_calibration: float
    event: str


@dataclass(frozen=True)
class SearchResult:
    """What a search returns (the plan to measure beside the pool's, and what it cost).

    Attributes:
        strategy: the strategy's registry name.
        choices: layer -> index into ``layer.choices`` of the returned plan; bits: layer -> bit-width.
        calibration_dloss: its measured loss change over every calibration batch (loss units).
        validation_dloss: its measured loss change on validation, None without validation batches.
        selected_on: "validation" or "calibration": the split the finalists were compared on.
        predicted_loss: the surrogate's (the problem's additive costs') value of the returned plan.
        size_bits: its size in bits (within the problem's budget: checked).
        surrogate_optimum: the surrogate's optimal value (the exact solver's objective) and
            surrogate_bound: its certified lower bound; surrogate_measured: the optimum's measured loss change on
            ``selected_on`` (so the gap between optimal-for-the-model and best-measured is visible).
        forwards: forward passes spent (the final selection included); seconds: wall time.
        history: the search's steps.
        provenance: seeds (label -> whether measured), which seed the returned plan descends from, the budget, the
            options, the rng seed, why it stopped.
    """

    strategy: str
    choices: Mapping[str, int]
    bits: Mapping[str, int]
    calibration_dloss: float
    validation_dloss: float | None
    selected_on: str
    predicted_loss: float
    size_bits: float
    surrogate_optimum: float
    surrogate_bound: float | None
    surrogate_measured: float
    forwards: int
    seconds: float
    history: tuple[HistoryPoint, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def selected_value(self) -> float:
        """The measured value the plan was selected on (validation, else calibration)."""
        return self.validation_dloss if self.validation_dloss is not None else self.calibration_dloss

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for a plan file's ``extra`` (no history)."""
        return {"strategy": self.strategy, "calibration_dloss": self.calibration_dloss,
                "validation_dloss": self.validation_dloss, "selected_on": self.selected_on,
                "predicted_loss": self.predicted_loss, "size_bits": self.size_bits,
                "surrogate_optimum": self.surrogate_optimum, "surrogate_bound": self.surrogate_bound,
                "surrogate_measured": self.surrogate_measured, "forwards": self.forwards, "seconds": self.seconds,
                **{k: v for k, v in self.provenance.items() if k in ("descends_from", "stopped", "seeds", "seed")}}


@dataclass(frozen=True)
class Seed:
    """A starting plan: a label (where it came from) and one option index per compiled group."""

    label: str
    option: np.ndarray


@dataclass(frozen=True)
class SearchRequest:
    """A measured search to run (``cetopt plan --search``, :func:`cetopt.search.search_plan`).

    Attributes:
        strategy: a registered strategy (:mod:`cetopt.search.registry`: evopress, local, refit).
        budget: what it may spend (None: cetopt.search.api.DEFAULT_FORWARDS forward passes).
        seed: its random seed.
        progress: show its progress bar on stderr.
        options: the strategy's own options (its ``Options`` fields), None for its defaults.
    """

    strategy: str = DEFAULT_STRATEGY
    budget: "SearchBudget | None" = None
    seed: int = 0
    progress: bool = False
    options: Mapping[str, Any] | None = None

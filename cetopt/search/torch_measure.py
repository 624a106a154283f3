"""The search's measurement on a real model: a built problem's plans measured on pieces of the calibration data.

Successive halving needs many small calibration subsets, and the zoo's calibration data is two batches of 128;
so each calibration batch is cut into equal pieces (:func:`cetopt.measure.split_batch`) until there are at least
``chunks`` of them, and one piece of one plan is one forward pass. A piece's loss change is ``loss_fn`` on the
piece with the plan's compressed weights minus the same with the original weights (computed once per piece, not
counted in the search's budget); a validation batch counts as many forwards as a calibration batch has pieces; the
mean over equal pieces is the calibration loss change of
:meth:`cetopt.measure.Measurer.calibration_dloss` (up to pieces of unequal size when a batch does not divide).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from cetopt.errors import ProblemError
from cetopt.measure import Measurer, split_batch
from cetopt.search.api import DEFAULT_FORWARDS, run_search
from cetopt.search.base import PlanMeasurement, SearchBudget, SearchRequest, SearchResult, Seeding

if TYPE_CHECKING:
    from cetopt.builders.second_order import BuiltProblem
    from cetopt.modelspec import ModelSpec

log = logging.getLogger(__name__)
MIN_CHUNKS = 16  # calibration pieces the search subsamples from (more: finer subsets, more Python overhead)


class ModelMeasure:
    """``measure(choices, subset)`` and ``validate(choices)`` for ``built``'s plans on ``spec`` (module docstring).

    Attributes:
        chunks: the calibration pieces; n_batches: how many; validation_forwards: what one validation of one plan
            costs, in piece-sized forwards (validation batches x pieces per calibration batch);
        base_forwards: forwards spent on the original model's per-piece losses (outside the search's budget).
    """

    def __init__(self, spec: "ModelSpec", built: "BuiltProblem", *, chunks: int = MIN_CHUNKS,
                 measurer: Measurer | None = None) -> None:
        self.spec, self.built = spec, built
        self.measurer = measurer or Measurer(spec)
        parts = max(1, math.ceil(chunks / len(spec.calibration)))
        try:
            self.chunks: list[Any] = [piece for batch in spec.calibration for piece in split_batch(batch, parts)]
        except ProblemError as err:
            log.info("the search measures whole calibration batches (%s)", err)
            self.chunks, parts = list(spec.calibration), 1
        self.n_batches = len(self.chunks)
        # in piece-sized forwards, the search's unit: a validation batch is as large as a calibration batch
        self.validation_forwards = len(spec.validation) * parts
        self._base: dict[int, float] = {}
        self.base_forwards = 0

    def _losses(self, model: torch.nn.Module, subset: Sequence[int]) -> list[float]:
        from cetopt._hooks import eval_mode

        with torch.no_grad(), eval_mode(model):
            return [float(self.spec.loss_fn(model, self.chunks[i])) for i in subset]

    def __call__(self, choices: Mapping[str, int], subset: Sequence[int]) -> float:
        """Mean loss change of the plan over calibration pieces ``subset`` (loss units)."""
        todo = [int(i) for i in subset if int(i) not in self._base]
        if todo:
            self._base.update(zip(todo, self._losses(self.measurer.model_with({}), todo)))
            self.base_forwards += len(todo)
        losses = self._losses(self.measurer.model_with(self.built.weights_for_choices(choices)), subset)
        return sum(loss - self._base[int(i)] for loss, i in zip(losses, subset)) / len(losses)

    def validate(self, choices: Mapping[str, int]) -> float:
        """The plan's validation loss change (the spec has validation batches)."""
        value = self.measurer.validation_dloss(self.built.weights_for_choices(choices))
        assert value is not None
        return value


def search_plan(spec: "ModelSpec", built: "BuiltProblem", request: SearchRequest = SearchRequest(), *,
                seeding: Seeding = Seeding(), measurer: Measurer | None = None,
                chunks: int = MIN_CHUNKS) -> SearchResult:
    """The library call of ``cetopt plan --search``: search ``built.problem``'s plans measured on ``spec``
    (:func:`cetopt.search.api.run_search`; ``seeding.extra`` maps a label to layer -> choice index), selected on
    ``spec``'s validation batches where it has them, else on its calibration data (never its test data).
    ``chunks``: calibration pieces the successive halving measures on; ``measurer``: a working copy to reuse."""
    measure = ModelMeasure(spec, built, chunks=chunks, measurer=measurer)
    measurement = PlanMeasurement(measure, measure.n_batches, measure.validate if spec.validation else None,
                                  measure.validation_forwards)
    result = run_search(built.problem, measurement, strategy=request.strategy,
                        budget=request.budget or SearchBudget(DEFAULT_FORWARDS), seeding=seeding,
                        options=request.options, seed=request.seed, progress=request.progress)
    provenance = {**result.provenance, "calibration_pieces": measure.n_batches, "base_forwards": measure.base_forwards}

    return dataclasses.replace(result, provenance=provenance)

"""Apply compressed weights to a model and measure them: the one apply-and-measure path that the demo, the
bench, the proofs and the notebooks call.

A plan reaches this module as compressed weights (layer name -> tensor shaped like the layer's weight): from
a built problem's candidates (``BuiltProblem.compressed_weights``, exactly as they were scored) or from a plan
file (``cetopt.quant.apply.apply_plan``). :class:`Measurer` keeps one working copy of the model and swaps
weights in and out, so measuring many plans costs forward passes only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.spec import ModelSpec


@dataclass(frozen=True)
class Measurement:
    """What a set of compressed weights does to the model.

    Attributes:
        metrics: ``spec.evaluate`` of the compressed model (test data), {} without an evaluation.
        metric_name, metric: the headline metric (first key) and its value (None without an evaluation).
        calibration_dloss: change of the mean calibration loss vs the original model (nats, or the loss's unit).
        validation_dloss: the same on the validation batches (None when the spec has none).
        outcomes: (n_test,) per-example headline outcomes (``spec.test_outcomes``) for paired CIs, or None.
    """

    metrics: Mapping[str, float]
    metric_name: str | None
    metric: float | None
    calibration_dloss: float
    validation_dloss: float | None = None
    outcomes: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def mean_loss(spec: ModelSpec, model: nn.Module, batches: Sequence[Any]) -> float:
    """Mean of ``spec.loss_fn`` over ``batches`` (no gradients, eval mode)."""
    from cetopt._hooks import eval_mode

    with torch.no_grad(), eval_mode(model):
        return sum(float(spec.loss_fn(model, b)) for b in batches) / len(batches)


def _leading_sizes(batch: Any) -> set[int]:
    """The first dimensions of every tensor in ``batch`` (nested tuples, lists and mappings searched)."""
    if isinstance(batch, torch.Tensor):
        return {int(batch.shape[0])} if batch.dim() > 0 else set()
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    return set().union(*(_leading_sizes(v) for v in values)) if values else set()


def batch_rows(batch: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of ``batch``: every tensor sliced on its first dimension, the structure around it
    kept (nested tuples, lists and mappings; other values repeated)."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() > 0 else batch
    if isinstance(batch, Mapping):
        items = {k: batch_rows(v, start, stop) for k, v in batch.items()}
        return items if type(batch) is dict else type(batch)(items)
    if isinstance(batch, (tuple, list)):
        return type(batch)(batch_rows(v, start, stop) for v in batch)
    return batch


def _example(batch: Any, i: int) -> Any:
    """Example ``i`` of ``batch``: every tensor sliced to ``[i:i + 1]``, the structure around it kept."""
    return batch_rows(batch, i, i + 1)


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` cut into ``parts`` consecutive pieces of (nearly) equal size (fewer when it has fewer examples).

    Raises:
        ProblemError: as :func:`single_examples` (no shared batch dimension).
    """
    sizes = _leading_sizes(batch)
    if len(sizes) != 1:
        raise ProblemError(f"cannot split a batch: its tensors' first dimensions are {sorted(sizes)} "
                           "(need one shared batch dimension)", field="batches")
    n = sizes.pop()
    edges = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [batch_rows(batch, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def single_examples(batch: Any) -> list[Any]:
    """``batch`` split into batches of one example each: a tensor, or tuples / lists / mappings of tensors (nested)
    that share their first dimension (other values are repeated in every example).

    Raises:
        ProblemError: no tensor to split, or tensors whose first dimensions differ.
    """
    sizes = _leading_sizes(batch)
    if len(sizes) != 1:
        raise ProblemError(f"cannot split a batch into examples: its tensors' first dimensions are {sorted(sizes)} "
                           "(need one shared batch dimension)", field="batches")
    return [_example(batch, i) for i in range(sizes.pop())]


class Measurer:
    """Measures compressed weights on one ModelSpec, reusing one working copy of the model.

    The original model is never modified; base losses are computed once.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._work = copy.deepcopy(spec.model)
        from cetopt.curvature.layers import BARE_WEIGHTS

        self._modules = dict(self._work.named_modules())
        originals = dict(spec.model.named_modules())
        self._originals = {name: m.weight.detach().clone() for name, m in originals.items()
                           if isinstance(getattr(m, "weight", None), torch.Tensor)}
        self._originals.update({f"{name}.{attr}" if name else attr: getattr(m, attr).detach().clone()  # bare Parameters
                                for name, m in originals.items() for attr in BARE_WEIGHTS
                                if isinstance(getattr(m, attr, None), torch.Tensor)})
        self._base_cal: float | None = None
        self._base_val: float | None = None
        self._fp_metrics: dict[str, float] | None = None
        self._base_examples: dict[str, np.ndarray] = {}

    def model_with(self, weights: Mapping[str, torch.Tensor]) -> nn.Module:
        """The working copy with ``weights`` swapped in (every other layer at its original weight).

        The returned module is reused by the next call: measure it before asking for another."""
        unknown = [n for n in weights if n not in self._originals]
        if unknown:
            raise ProblemError(f"the model has no layer {unknown[0]!r} with a weight", field="layers")
        for name, original in self._originals.items():
            from cetopt.curvature.layers import layer_weight

            target = layer_weight(self._work, name)
            source = weights.get(name, original)
            if tuple(source.shape) != tuple(target.shape):
                raise ProblemError(f"weight of shape {tuple(source.shape)} for a layer of shape {tuple(target.shape)}",
                                   field=f"layers.{name}")
            target.data.copy_(source.to(device=target.device, dtype=target.dtype))
        return self._work

    @property
    def fp_metrics(self) -> dict[str, float]:
        """The original model's metrics (computed once)."""
        if self._fp_metrics is None:
            self._fp_metrics = self.spec.metrics()
        return self._fp_metrics

    def calibration_loss(self, weights: Mapping[str, torch.Tensor] | None = None) -> float:
        return mean_loss(self.spec, self.model_with(weights or {}), self.spec.calibration)

    def calibration_dloss(self, weights: Mapping[str, torch.Tensor]) -> float:
        """Measured change of the mean calibration loss (forward passes only)."""
        if self._base_cal is None:
            self._base_cal = self.calibration_loss()
        return self.calibration_loss(weights) - self._base_cal

    def validation_dloss(self, weights: Mapping[str, torch.Tensor]) -> float | None:
        """Measured change of the mean validation loss, or None when the spec has no validation batches."""
        if not self.spec.validation:
            return None
        if self._base_val is None:
            self._base_val = mean_loss(self.spec, self.model_with({}), self.spec.validation)
        return mean_loss(self.spec, self.model_with(weights), self.spec.validation) - self._base_val

    def per_example_dloss(self, weights: Mapping[str, torch.Tensor], split: str = "validation") -> np.ndarray:
        """Loss change of each example of ``split`` ("validation" or "calibration"), shape (n_examples,):
        ``loss_fn`` on one example at a time, with and without ``weights`` (the original losses computed once).
        Its mean and standard error say whether a measured change is distinguishable from zero.

        Raises:
            ProblemError: an unknown split, a spec without that split, or batches that cannot be split.
        """
        from cetopt._hooks import eval_mode

        if split not in ("validation", "calibration"):
            raise ProblemError(f"split must be 'validation' or 'calibration', got {split!r}", field="split")
        batches = self.spec.validation if split == "validation" else self.spec.calibration
        if not batches:
            raise ProblemError(f"{self.spec.name} has no {split} batches", field=split)

        def losses(model: nn.Module) -> np.ndarray:
            with torch.no_grad(), eval_mode(model):
                return np.array([float(self.spec.loss_fn(model, one)) for b in batches for one in single_examples(b)])

        if split not in self._base_examples:
            self._base_examples[split] = losses(self.model_with({}))
        return losses(self.model_with(weights)) - self._base_examples[split]

    def measure(self, weights: Mapping[str, torch.Tensor], *, validation: bool = True,
                outcomes: bool = False, activations: Mapping[str, Any] | None = None) -> Measurement:
        """Metrics on the test data, calibration (and validation) loss change of ``weights``; with ``outcomes``
        also the per-example test outcomes (when the spec defines them). ``activations``: layer -> grid
        (cetopt.quant.activations.ActivationGrid) whose input is fake-quantised; the FP32 baselines never are."""
        from contextlib import nullcontext

        if activations:  # the baselines first, on the unquantised working copy
            self.calibration_dloss({})
            if validation:
                self.validation_dloss({})
        from cetopt.quant.activations import fake_quantised_inputs

        with fake_quantised_inputs(self._work, activations) if activations else nullcontext():
            metrics = self.spec.metrics(self.model_with(weights)) if self.spec.evaluate is not None else {}
            name = next(iter(metrics), None)
            per_example = None
            if outcomes and self.spec.test_outcomes is not None:
                per_example = np.asarray(self.spec.test_outcomes(self.model_with(weights)), dtype=np.float64).ravel()
            return Measurement(metrics=metrics, metric_name=name, metric=metrics[name] if name else None,
                               calibration_dloss=self.calibration_dloss(weights),
                               validation_dloss=self.validation_dloss(weights) if validation else None,
                               outcomes=per_example)


def check_same_model(spec: ModelSpec, metadata: Mapping[str, Any], *, what: str = "problem") -> None:
    """Refuse to measure a problem's or plan's weights on another model than the one it was built on.

    Raises cetopt.fingerprint.FingerprintMismatchError when ``metadata``'s recorded fingerprints differ from
    ``spec``'s (no-op when it records none, e.g. a hand-written plan)."""
    from cetopt.fingerprint import check_fingerprint

    check_fingerprint(metadata, spec, what=what)

"""Fidelity objectives: how far a model's outputs are from the FP32 model's own outputs on the same inputs.

A fidelity objective has its minimum exactly at the FP32 weights: there its gradient is 0 and its Hessian is the
Gauss-Newton matrix J' H_o J (positive semi-definite), so every predicted change of a candidate is >= 0 and a plan
cannot "improve" the model by moving away from it (a task loss such as cross-entropy against the model's own top-1
rewards sharpening the softmax, and a plan built on it takes such candidates). It needs no labels.

Three objectives, each a callable ``objective(model, batch) -> scalar tensor`` whose ``batch`` is a dict
``{INPUTS: inputs, REFERENCE: fp32_outputs}`` (:func:`referenced`):

- :data:`kl_to_reference`: KL(softmax(reference) || softmax(output)) along the last dimension, averaged over every
  other dimension (rows): for classifier logits (nats).
- :data:`output_mse`: mean squared difference over every element: for regressors (the output's unit squared).
- :data:`cosine_to_reference`: 1 - cosine(output, reference) along the last dimension, averaged over rows: for
  embeddings (dimensionless).

How inputs reach the model (:func:`feed`): a tensor ``x`` -> ``model(x)``; a tuple or list -> ``model(*batch)``; a
dict -> ``model(**batch)``. A model may return a tensor or an object with a ``logits`` tensor (attribute or key).

A :class:`~cetopt.spec.ModelSpec` without ``loss_fn`` (or with one of these objectives as its ``loss_fn``)
records the FP32 outputs on its calibration, validation and test inputs once (:func:`bind_objective`) and uses the
bound objective as its loss; with no ``loss_fn`` the kind is chosen by :func:`choose_kind`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt._hooks import eval_mode
from cetopt.errors import ProblemError

log = logging.getLogger(__name__)

INPUTS = "cetopt.inputs"        # key of a referenced batch's model inputs
REFERENCE = "cetopt.reference"  # key of a referenced batch's FP32 outputs
KINDS = ("kl", "mse", "cosine")
UNIT_NORM_TOL = 1e-3  # rows whose L2 norms are all within this of 1 are read as embeddings


def feed(model: nn.Module, inputs: Any) -> Any:
    """``model`` called on an inputs-only batch: tensor -> model(x), tuple/list -> model(*batch), dict -> model(**batch)."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    raise ProblemError(f"an inputs-only batch must be a tensor, a tuple/list (model(*batch)) or a dict "
                       f"(model(**batch)), got {type(inputs).__name__}", field="ModelSpec.calibration")


def output_tensor(out: Any) -> torch.Tensor:
    """The model output a fidelity objective compares: a floating-point tensor, or the ``logits`` of an output
    object (attribute or key, as Hugging Face models return)."""
    if isinstance(out, torch.Tensor):
        value = out
    elif isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        value = out["logits"]
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        value = out.logits
    else:
        raise ProblemError(f"the model returns {type(out).__name__}; a fidelity objective needs a tensor or an "
                           "output with a 'logits' tensor: give ModelSpec.loss_fn instead", field="ModelSpec.loss_fn")
    if not torch.is_floating_point(value) or value.dim() == 0:
        raise ProblemError(f"the model output is a {value.dtype} tensor of shape {tuple(value.shape)}; a fidelity "
                           "objective needs floating-point outputs with a batch dimension", field="ModelSpec.loss_fn")
    return value


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(rows, last) view: every leading dimension is a row (a 1-D output is one value per example)."""
    return t.reshape(-1, 1) if t.dim() == 1 else t.reshape(-1, t.shape[-1])


def kl_rows(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(rows,) KL(softmax(reference) || softmax(out)) per row of the last dimension (nats)."""
    log_ref = torch.log_softmax(_rows(reference).to(out.dtype), dim=-1)
    log_out = torch.log_softmax(_rows(out), dim=-1)
    return (log_ref.exp() * (log_ref - log_out)).sum(dim=-1)


def cosine_rows(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(rows,) cosine between each row of ``out`` and of ``reference`` (last dimension)."""
    return torch.nn.functional.cosine_similarity(_rows(out), _rows(reference).to(out.dtype), dim=-1, eps=1e-12)


def _split(batch: Any) -> tuple[Any, torch.Tensor]:
    if not is_referenced(batch):
        raise ProblemError("a fidelity objective's batch is {'cetopt.inputs': inputs, 'cetopt.reference': FP32 "
                           "outputs} (cetopt.losses.referenced); give the objective to ModelSpec.loss_fn and the "
                           "inputs-only batches to ModelSpec.calibration, and cetopt records the references",
                           field="batch")
    return batch[INPUTS], batch[REFERENCE]


@dataclass(frozen=True)
class FidelityObjective:
    """A fidelity objective (:data:`KINDS`) as ``loss_fn(model, batch) -> scalar tensor``.

    Attributes:
        kind: "kl", "mse" or "cosine".
        reason: why this kind was chosen ("" where the user named it).
        reference_digest: SHA-256 of the model state the references were recorded on (:func:`weights_digest`);
            None for the unbound objectives a user names (:data:`kl_to_reference`, ...).
    """

    kind: str
    reason: str = ""
    reference_digest: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProblemError(f"unknown fidelity objective {self.kind!r}; use one of {KINDS}", field="kind")

    @property
    def name(self) -> str:
        """The public name of this kind: kl_to_reference, output_mse or cosine_to_reference."""
        return {"kl": "kl_to_reference", "mse": "output_mse", "cosine": "cosine_to_reference"}[self.kind]

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, reference = _split(batch)
        out = output_tensor(feed(model, inputs))
        if self.kind == "kl":
            return kl_rows(out, reference).mean()
        if self.kind == "mse":
            return ((out - reference.to(out.dtype)) ** 2).mean()
        return (1.0 - cosine_rows(out, reference)).mean()

    def describe(self) -> str:
        return f"fidelity: cetopt.losses.{self.name}" + (f" ({self.reason})" if self.reason else "")


kl_to_reference = FidelityObjective("kl")
"""KL(FP32 softmax || softmax) on the last dimension, mean over rows: for classifier logits (nats)."""
output_mse = FidelityObjective("mse")
"""Mean squared difference from the FP32 outputs over every element: for regressors."""
cosine_to_reference = FidelityObjective("cosine")
"""1 - cosine to the FP32 outputs along the last dimension, mean over rows: for embeddings."""


def is_fidelity(loss_fn: Any) -> bool:
    return isinstance(loss_fn, FidelityObjective)


def is_referenced(batch: Any) -> bool:
    """Whether ``batch`` is a referenced batch ({INPUTS: ..., REFERENCE: ...})."""
    return isinstance(batch, dict) and set(batch) == {INPUTS, REFERENCE}


def referenced(inputs: Any, reference: torch.Tensor) -> dict[str, Any]:
    """The batch a fidelity objective reads: the model inputs and the FP32 outputs on them."""
    return {INPUTS: inputs, REFERENCE: reference}


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every state tensor of ``model`` as float64 on the CPU: equal for a float32 model and its float64
    copy on any device, so a curvature operator's copy is recognised as the weights the references came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        t = t.double() if torch.is_floating_point(t) else t
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def at_reference(loss_fn: Any, model: nn.Module) -> bool:
    """Whether ``loss_fn`` is a bound fidelity objective and ``model`` holds the weights its references were
    recorded on: there the objective's gradient is exactly 0 (every per-sample gradient too)."""
    return is_fidelity(loss_fn) and loss_fn.reference_digest is not None \
        and loss_fn.reference_digest == weights_digest(model)


def reference_outputs(model: nn.Module, batches: Sequence[Any], field: str) -> list[torch.Tensor]:
    """The model's outputs on each inputs-only batch (eval mode, no gradients), detached."""
    out = []
    with torch.no_grad(), eval_mode(model):
        for i, inputs in enumerate(batches):
            try:
                value = feed(model, inputs)
            except ProblemError:
                raise
            except (TypeError, RuntimeError, ValueError) as err:
                kind = "model(x)" if isinstance(inputs, torch.Tensor) else \
                    "model(**batch)" if isinstance(inputs, Mapping) else "model(*batch)"
                raise ProblemError(f"batch {i}: {kind} failed ({type(err).__name__}: {str(err).splitlines()[0][:160]});"
                                   " without loss_fn a batch holds the model's inputs only (tensor -> model(x), "
                                   "tuple/list -> model(*batch), dict -> model(**batch)): drop any labels, or give "
                                   "ModelSpec.loss_fn", field=field) from None
            out.append(output_tensor(value).detach().clone())
    return out


def choose_kind(output: torch.Tensor) -> tuple[str, str]:
    """The fidelity objective for a model output and why: "cosine" for unit-norm rows (embeddings), "kl" for rows
    of >= 2 values (classifier logits), "mse" for one value per row (regression)."""
    rows = _rows(output)
    if rows.shape[-1] < 2:
        return "mse", "one output value per example: read as a regressor, mean squared difference"
    norms = rows.double().norm(dim=-1)
    if bool(((norms - 1.0).abs() < UNIT_NORM_TOL).all()):
        return "cosine", f"outputs are unit-norm vectors of {rows.shape[-1]} values: read as embeddings, 1 - cosine"
    return "kl", (f"outputs are rows of {rows.shape[-1]} values: read as classifier logits, KL from the FP32 softmax "
                  "(pass loss_fn=cetopt.losses.output_mse or cosine_to_reference for other outputs)")


@dataclass(frozen=True)
class BoundObjective:
    """What :func:`bind_objective` returns: the bound objective and the referenced batches of each split."""

    objective: FidelityObjective
    calibration: list[Any]
    validation: list[Any]
    test: list[Any]


def bind_objective(model: nn.Module, calibration: Sequence[Any], validation: Sequence[Any], test: Sequence[Any],
                   objective: FidelityObjective | None = None) -> BoundObjective:
    """Record the FP32 outputs on every split once and bind the objective (``None``: :func:`choose_kind` on the
    first calibration output) to these weights.

    Already referenced batches are kept as they are (a ModelSpec rebuilt by dataclasses.replace), and so is a bound
    objective's digest: the references stay those of the weights they were recorded on, so another model is never
    taken for their minimum. New inputs beside them must come from those same weights.

    Raises:
        ProblemError: a batch fails in the model (labels left in an inputs-only batch), or new inputs would be
            referenced on other weights than the existing references.
    """
    current = weights_digest(model)
    recorded_on = objective.reference_digest if objective is not None else None
    if recorded_on is not None and recorded_on != current and any(
            not is_referenced(b) for split in (calibration, validation, test) for b in split):
        raise ProblemError("new inputs-only batches beside references recorded on other weights: build the ModelSpec "
                           "from inputs-only batches and an unbound objective (loss_fn=None)", field="ModelSpec.loss_fn")
    splits = {}
    for field, batches in (("ModelSpec.calibration", calibration), ("ModelSpec.validation", validation),
                           ("ModelSpec.test", test)):
        batches = list(batches)
        todo = [b for b in batches if not is_referenced(b)]
        refs = iter(reference_outputs(model, todo, field))
        splits[field] = [b if is_referenced(b) else referenced(b, next(refs)) for b in batches]
    if objective is None:
        kind, reason = choose_kind(splits["ModelSpec.calibration"][0][REFERENCE])
    else:
        kind, reason = objective.kind, objective.reason or "named by ModelSpec.loss_fn"
    bound = FidelityObjective(kind, reason, recorded_on or current)
    log.info("objective: %s", bound.describe())
    return BoundObjective(bound, splits["ModelSpec.calibration"], splits["ModelSpec.validation"],
                          splits["ModelSpec.test"])


def fidelity_outcomes(model: nn.Module, batches: Sequence[Any], kind: str) -> dict[str, np.ndarray]:
    """Per-example fidelity to the FP32 outputs on referenced ``batches``, each (n_examples,):
    "agreement" (1.0 where the top-1 of every row matches the FP32 top-1; "kl" objectives only), "kl" (mean over
    the example's rows), "cosine" (of the example's flattened output), "mse" (mean over its elements)."""
    parts: dict[str, list[np.ndarray]] = {"agreement": [], "kl": [], "cosine": [], "mse": []}
    with torch.no_grad(), eval_mode(model):
        for batch in batches:
            inputs, reference = _split(batch)
            out = output_tensor(feed(model, inputs)).double()
            ref = reference.to(out)
            n = out.shape[0]
            flat_out, flat_ref = out.reshape(n, -1), ref.reshape(n, -1)
            parts["cosine"].append(torch.nn.functional.cosine_similarity(flat_out, flat_ref, dim=1, eps=1e-12).numpy())
            parts["mse"].append(((flat_out - flat_ref) ** 2).mean(dim=1).numpy())
            if kind == "kl":
                parts["kl"].append(kl_rows(out, ref).reshape(n, -1).mean(dim=1).numpy())
                same = (_rows(out).argmax(dim=-1) == _rows(ref).argmax(dim=-1)).reshape(n, -1)
                parts["agreement"].append(same.all(dim=1).double().numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def fidelity_metrics(model: nn.Module, batches: Sequence[Any], kind: str) -> dict[str, float]:
    """Mean fidelity to FP32 on referenced ``batches``, headline first (higher is better): "agreement" for "kl"
    objectives, else "cosine"; then the others (kl and mse: lower is better)."""
    outcomes = fidelity_outcomes(model, batches, kind)
    order = ["agreement", "kl", "cosine", "mse"] if kind == "kl" else ["cosine", "mse"]
    return {k: float(outcomes[k].mean()) for k in order if k in outcomes}


def headline(kind: str) -> str:
    """The per-example outcome a spec's ``test_outcomes`` reports for a fidelity objective of ``kind``."""
    return "agreement" if kind == "kl" else "cosine"

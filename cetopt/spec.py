"""The :class:`ModelSpec` contract: what cetopt needs to know about a model (the network, its calibration data,
loss and evaluation). How a command-line target becomes one is :mod:`cetopt.modelspec`, which sits above the zoo.

A user brings a model by writing one function that returns a ModelSpec; inputs alone are enough::

    # my_model.py
    from cetopt import ModelSpec

    def spec() -> ModelSpec:
        model = build_and_load_my_model()                        # an nn.Module with trained weights
        return ModelSpec(name="my-model", model=model,
                         calibration=[x[i:i + 64] for i in range(0, 256, 64)],      # model(batch)
                         validation=[x[i:i + 64] for i in range(256, 512, 64)])

Without ``loss_fn`` cetopt records the model's FP32 outputs on these inputs once and minimises the fidelity to
them (cetopt.losses: KL for classifier logits, MSE or 1 - cosine for other outputs), whose minimum is the FP32
model itself. A ``loss_fn(model, batch)`` of the user's own is still accepted.

Nothing here imports torch at module import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from cetopt.errors import ProblemError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """A trained model with its calibration data, loss and (optionally) evaluation.

    Inputs-only form (no ``loss_fn``): each batch holds the model's inputs only and is fed as a tensor
    ``x`` -> ``model(x)``, a tuple or list -> ``model(*batch)``, a dict -> ``model(**batch)``; the model returns a
    tensor (or an output with a ``logits`` tensor). At construction the FP32 outputs on the calibration, validation
    and test batches are recorded once, the batches become ``{"cetopt.inputs": inputs, "cetopt.reference":
    outputs}`` and ``loss_fn`` the bound fidelity objective (:mod:`cetopt.losses`): KL for classifier logits,
    1 - cosine for unit-norm embeddings, MSE for one value per example; ``metadata["objective"]`` says which and
    why. Passing ``loss_fn=cetopt.losses.output_mse`` (or ``kl_to_reference``, ``cosine_to_reference``) names the
    kind. Without ``evaluate``, the evaluation is the fidelity to FP32 on the test batches (else the validation
    batches): top-1 agreement and KL for logits, cosine and MSE otherwise, per example in ``test_outcomes``.

    Attributes:
        name: a short name (used in problem names and provenance).
        model: the network (never modified by cetopt).
        calibration: batches the curvature and costs are computed on; ``loss_fn(model, batch)`` must return a
            scalar tensor, and the calibration loss is its mean over the batches.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; None: the fidelity objective (above).
        evaluate: ``evaluate(model) -> {metric: value, ...}`` on held-out TEST data, higher is better; the first
            key is the headline metric. None: plans are judged on the calibration loss alone (inputs-only specs:
            the fidelity metrics above).
        test_outcomes: ``test_outcomes(model) -> (n_test,) array``: the headline metric per test example (1.0 where a
            classifier is right, a sentence's cosine, ...), the same examples in the same order for every model, so
            two plans can be compared with a paired bootstrap CI (cetopt.stats). None: no per-example outcomes.
        test_clusters: the source of each test example, in ``test_outcomes``' order (the photo a crop was cut from,
            the document a sentence came from): examples of one source are not independent draws, so CIs resample
            sources (cetopt.stats.clustered_bootstrap_ci). None: the examples are independent draws.
        validation: held-out calibration batches (same form as ``calibration``), disjoint from both the
            calibration and the test data: what selection steps (re-ranking, cost validation) may look at.
        data: a sentence describing the calibration and test data (provenance).
        exclude: layer names left out of the problem (e.g. a pooler that receives no gradient).
        layers: restrict the problem to these layers (default: every Linear/Conv/Embedding not excluded).
        metadata: free provenance (seed, weights file and its SHA-256, ...).
        test: held-out inputs-only batches for the fidelity evaluation of a spec without ``loss_fn`` and
            ``evaluate`` (disjoint from calibration and validation); ignored otherwise.
    """

    name: str
    model: "nn.Module"
    calibration: Sequence[Any]
    loss_fn: Callable[["nn.Module", Any], "torch.Tensor"] | None = None
    evaluate: Callable[["nn.Module"], Mapping[str, float]] | None = None
    test_outcomes: Callable[["nn.Module"], Any] | None = None
    test_clusters: Sequence[str] | None = None
    validation: Sequence[Any] = ()
    data: str = ""
    exclude: tuple[str, ...] = ()
    layers: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    test: Sequence[Any] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ProblemError("expected a non-empty string", field="ModelSpec.name")
        if not hasattr(self.model, "named_modules"):
            raise ProblemError(f"expected a torch nn.Module, got {type(self.model).__name__}", field="ModelSpec.model")
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise ProblemError("expected a function loss_fn(model, batch) -> scalar tensor, or None for the fidelity "
                               "objective", field="ModelSpec.loss_fn")
        if self.test_outcomes is not None and not callable(self.test_outcomes):
            raise ProblemError("expected a function test_outcomes(model) -> per-example array, or None",
                               field="ModelSpec.test_outcomes")
        if self.test_clusters is not None and (self.test_outcomes is None or isinstance(self.test_clusters, str)
                                               or len(self.test_clusters) == 0):
            raise ProblemError("expected one source id per test example, alongside test_outcomes (or None)",
                               field="ModelSpec.test_clusters")
        if self.evaluate is not None and not callable(self.evaluate):
            raise ProblemError("expected a function evaluate(model) -> {metric: value} or None",
                               field="ModelSpec.evaluate")
        if len(self.calibration) == 0:
            raise ProblemError("the calibration data is empty; give at least one batch", field="ModelSpec.calibration")
        if self.loss_fn is None or getattr(self.loss_fn, "kind", None) in ("kl", "mse", "cosine"):
            self._bind_fidelity()

    def _bind_fidelity(self) -> None:
        """Record the FP32 outputs and bind the fidelity objective (frozen fields set once, here)."""
        from cetopt.losses import bind_objective, fidelity_metrics, fidelity_outcomes, headline, is_fidelity

        if self.loss_fn is not None and not is_fidelity(self.loss_fn):
            return
        bound = bind_objective(self.model, self.calibration, self.validation, self.test, self.loss_fn)
        set_ = object.__setattr__
        set_(self, "loss_fn", bound.objective)
        set_(self, "calibration", bound.calibration)
        set_(self, "validation", bound.validation)
        set_(self, "test", bound.test)
        held_out, split = (bound.test, "test") if bound.test else (bound.validation, "validation")
        info = {"objective": bound.objective.describe(), "objective_kind": bound.objective.kind}
        if self.evaluate is None and held_out:
            kind = bound.objective.kind
            set_(self, "evaluate", lambda m: fidelity_metrics(m, held_out, kind))
            if self.test_outcomes is None:
                set_(self, "test_outcomes", lambda m: fidelity_outcomes(m, held_out, kind)[headline(kind)])
            info["evaluation"] = f"fidelity to FP32 on the {split} batches"
        set_(self, "metadata", {**self.metadata, **info})

    @property
    def fidelity(self) -> bool:
        """Whether the loss is a fidelity objective (cetopt.losses) bound to this model's FP32 outputs."""
        return getattr(self.loss_fn, "reference_digest", None) is not None

    def paired_ci(self, a: Any, b: Any, **options: Any) -> Any:
        """Paired CI of ``mean(a) - mean(b)`` over this spec's test examples (``test_outcomes`` of two models), by
        source when ``test_clusters`` is set (:func:`cetopt.stats.paired_ci`; options: confidence, n_boot, seed)."""
        from cetopt.stats import paired_ci

        return paired_ci(a, b, self.test_clusters, **options)

    def quantisable_layers(self) -> list[str] | None:
        """The layer names the problem covers (None: every Linear/Conv/Embedding)."""
        if self.layers is not None:
            return list(self.layers)
        if not self.exclude:
            return None
        from cetopt.curvature.layers import find_layers

        return [ref.name for ref in find_layers(self.model, exclude=self.exclude)]

    def as_fidelity(self, inputs: Callable[[Any], Any] | None = None) -> "ModelSpec":
        """This spec with the fidelity objective (:mod:`cetopt.losses`) in place of its ``loss_fn``: the same model,
        evaluation and test outcomes; calibration and validation batches reduced to their inputs (labels dropped)
        and their FP32 outputs recorded. Returns ``self`` when the spec already minimises a fidelity objective.

        Args:
            inputs: ``inputs(batch) -> model inputs`` for one task batch; default: the first element of a tuple or
                list batch ``(x, y, ...)``. A dict batch needs ``inputs`` (which keys are labels is the model's
                business).

        Raises:
            ProblemError: a batch whose inputs cannot be told from its labels (field ``inputs``).
        """
        if self.fidelity:
            return self

        def take(batch: Any) -> Any:
            if inputs is not None:
                return inputs(batch)
            if isinstance(batch, (tuple, list)) and len(batch) >= 2:
                return batch[0]
            raise ProblemError(f"{self.name}: a {type(batch).__name__} batch does not say which part is the model's "
                               "input; call spec.as_fidelity(inputs=lambda batch: ...)", field="inputs")

        from dataclasses import replace

        return replace(self, loss_fn=None, calibration=[take(b) for b in self.calibration],
                       validation=[take(b) for b in self.validation],
                       metadata={**self.metadata, "objective_from": "the task batches' inputs, labels dropped"})

    def metrics(self, model: "nn.Module | None" = None) -> dict[str, float]:
        """``evaluate(model)`` as plain floats ({} when the spec has no evaluation)."""
        if self.evaluate is None:
            return {}
        return {str(k): float(v) for k, v in self.evaluate(self.model if model is None else model).items()}


def from_legacy_dict(value: Mapping[str, Any], target: str) -> ModelSpec:
    """The older contract: a dict with model, loss_fn, batches (optionally name, data, evaluate)."""
    missing = [k for k in ("model", "loss_fn", "batches") if k not in value]
    if missing:
        raise ProblemError(f"{target} returned a dict without {missing}; return a cetopt.ModelSpec instead",
                           field="model")
    return ModelSpec(name=str(value.get("name", target)), model=value["model"], calibration=list(value["batches"]),
                     loss_fn=value["loss_fn"], evaluate=value.get("evaluate"), data=str(value.get("data", "")))

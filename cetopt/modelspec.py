"""What cetopt needs to know about a model: the :class:`ModelSpec` contract, and how a command-line target
(a zoo name, ``module:function`` or ``path/to/file.py:function``) becomes one.

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

and runs ``cetopt extract my_model.py:spec --out problem.json`` (or ``my_model:spec`` when the module is
importable). The zoo's models are ModelSpecs too (cetopt.zoo.registry).

Nothing here imports torch at module import, so resolving an unknown name fails fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
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


def _from_legacy_dict(value: Mapping[str, Any], target: str) -> ModelSpec:
    """The older contract: a dict with model, loss_fn, batches (optionally name, data, evaluate)."""
    missing = [k for k in ("model", "loss_fn", "batches") if k not in value]
    if missing:
        raise ProblemError(f"{target} returned a dict without {missing}; return a cetopt.ModelSpec instead",
                           field="model")
    return ModelSpec(name=str(value.get("name", target)), model=value["model"], calibration=list(value["batches"]),
                     loss_fn=value["loss_fn"], evaluate=value.get("evaluate"), data=str(value.get("data", "")))


def _import_target(module_part: str, target: str) -> Any:
    path = Path(module_part)
    if module_part.endswith(".py"):
        if not path.is_file():
            raise ProblemError(f"{target!r}: no such file {module_part!r}", field="model")
        name = f"cetopt_user_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ProblemError(f"{target!r}: cannot import {module_part!r} as a Python file", field="model")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # the file's own folder is importable, as it would be for `python file.py`
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `cetopt extract my_model:spec` from the folder holding my_model.py
    try:
        return importlib.import_module(module_part)
    except ImportError as err:
        raise ProblemError(f"cannot import module {module_part!r} ({err}); give a file path instead, e.g. "
                           f"path/to/{module_part}.py:function", field="model") from None


def check_target(target: str) -> None:
    """Reject a target that names no zoo model and is not ``module:function`` / an existing
    ``path/to/file.py:function``, without importing torch (the CLI calls this first, so it answers at once)."""
    from cetopt.zoo.registry import is_zoo_name, zoo_names

    if is_zoo_name(target):
        return
    module_part, sep, function_name = target.rpartition(":")
    if not sep or not module_part or not function_name or (len(module_part) == 1 and module_part.isalpha()):
        raise ProblemError(f"unknown model {target!r}: not a zoo model ({', '.join(zoo_names())}) nor "
                           "module:function / path/to/file.py:function", field="model")
    if module_part.endswith(".py") and not Path(module_part).is_file():
        raise ProblemError(f"{target!r}: no such file {module_part!r}", field="model")


def normalise_target(target: str) -> str:
    """``target`` with a ``file.py:function`` path made absolute (when the file exists), so targets typed in
    different folders compare equal and a recorded one names the file wherever it is read."""
    module, sep, function = target.rpartition(":")
    if sep and module.endswith(".py") and Path(module).is_file():
        return f"{Path(module).resolve()}:{function}"
    return target


def same_target(a: str, b: str) -> bool:
    """Whether two model targets name the same model (zoo name, module:function or file.py:function)."""
    return a == b or normalise_target(a) == normalise_target(b)


def choose_model(given: str | None, recorded: Any, *, what: str, flag: str = "--model",
                 allow_mismatch: bool = False, log: Callable[[str], None] | None = None) -> str:
    """The model target to load for a file (plan, artefact, problem) that records ``recorded``.

    A target written inside a data file is never imported: that would make a downloaded plan or artefact a
    program. The model comes from ``given`` (what the user typed, e.g. ``--model``); when the user gave none,
    a recorded *zoo name* is used (a registry lookup that runs no code from the file). A recorded
    ``module:function`` or ``file.py:function`` is only shown, and compared with ``given``.

    Args:
        given: the user's target (None: not given).
        recorded: the target the file records ("" / None / a non-string: none).
        what: the file, for messages ("plan plan.json").
        flag: the command-line flag that gives the model, for messages.
        allow_mismatch: accept a ``given`` that differs from ``recorded`` (a renamed or moved model file;
            fingerprints are still compared by the caller) with a warning through ``log``.
        log: where the mismatch warning goes (default: this module's logger at WARNING).

    Raises:
        ProblemError: no model given and the file records none or a non-zoo target (the message shows the
            recorded target and the flag to pass), or ``given`` and ``recorded`` differ without
            ``allow_mismatch``.
    """
    import logging

    from cetopt.zoo.registry import is_zoo_name

    recorded = recorded if isinstance(recorded, str) else ""
    if given is None or given == "":
        if not recorded:
            raise ProblemError(f"the {what} names no model; pass {flag} (a zoo name, module:function or "
                               "path/to/file.py:function)", field=flag)
        if not is_zoo_name(recorded):
            raise ProblemError(f"the {what} records the model {recorded!r:.300}, which is not a zoo model; cetopt "
                               f"never imports code named inside a file. If you trust that model, pass it yourself: "
                               f"{flag} TARGET", field=flag)
        logging.getLogger(__name__).info("%s: using its recorded zoo model %r", what, recorded)
        return recorded
    if recorded and not same_target(given, recorded):
        message = (f"{flag} {given!r} differs from the model the {what} records ({recorded!r:.300})")
        if not allow_mismatch:
            raise ProblemError(f"{message}; pass the model it was made for, or add --allow-model-mismatch if it is "
                               "the same model renamed or moved (its fingerprints are still checked)", field=flag)
        (log or logging.getLogger(__name__).warning)(f"{message}; accepted (--allow-model-mismatch)")
    return given


OBJECTIVES = ("task", "fidelity")
"""What a problem minimises: the spec's own ``loss_fn`` ("task") or the fidelity to its FP32 outputs."""


def load_model_spec(target: str, objective: str | None = None, **zoo_options: Any) -> ModelSpec:
    """The ModelSpec named by ``target``.

    Args:
        target: a zoo name (``cetopt.zoo.registry.zoo_names()``), ``module:function`` or
            ``path/to/file.py:function``; the function takes no arguments and returns a ModelSpec (or the
            older dict with model, loss_fn, batches).
        objective: None or "task": the spec as it is; "fidelity": :meth:`ModelSpec.as_fidelity`.
        **zoo_options: passed to the zoo factory (seed, calibration_size, ...); ignored for user functions.

    Raises:
        ProblemError: unknown zoo name (listing the zoo), unimportable module, missing function, bad return,
            unknown objective, "task" for a spec without a loss_fn of its own.
    """
    if objective not in (None, *OBJECTIVES):
        raise ProblemError(f"unknown objective {objective!r}; use one of {OBJECTIVES}", field="--objective")
    spec = _load_spec(target, **zoo_options)
    if objective == "fidelity":
        return spec.as_fidelity()
    if objective == "task" and spec.fidelity:
        raise ProblemError(f"{target} gives no loss_fn of its own, so there is no task loss to minimise; use "
                           "--objective fidelity (its default)", field="--objective")
    return spec


def objective_of(metadata: Mapping[str, Any]) -> str | None:
    """"fidelity" when a plan's or problem's metadata records a bound fidelity objective ("objective_kind"), else
    None (the spec's own loss), as :func:`load_model_spec`'s ``objective``."""
    return "fidelity" if metadata.get("objective_kind") in ("kl", "mse", "cosine") else None


def _load_spec(target: str, **zoo_options: Any) -> ModelSpec:
    from cetopt.zoo.registry import is_zoo_name, load_zoo

    check_target(target)
    if is_zoo_name(target):
        return load_zoo(target, **zoo_options)
    module_part, _, function_name = target.rpartition(":")
    module = _import_target(module_part, target)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ProblemError(f"{module_part!r} has no function {function_name!r}", field="model")
    value = function()
    if isinstance(value, ModelSpec):
        return value
    if isinstance(value, Mapping):
        return _from_legacy_dict(value, target)
    raise ProblemError(f"{target} returned {type(value).__name__}; return a cetopt.ModelSpec", field="model")

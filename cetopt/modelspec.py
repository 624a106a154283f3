"""How a command-line target (a zoo name, ``module:function`` or ``path/to/file.py:function``) becomes a
:class:`ModelSpec` (the contract itself is :mod:`cetopt.spec`, re-exported here, so ``from cetopt.modelspec import
ModelSpec, load_model_spec`` is the one import a user needs).

A user's function returning a ModelSpec (the example in :mod:`cetopt.spec`) is named on the command line, e.g.
``cetopt extract my_model.py:spec --out problem.json`` (or ``my_model:spec`` when the module is
importable). The zoo's models are ModelSpecs too (cetopt.zoo.registry).

Nothing here imports torch at module import, so resolving an unknown name fails fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from cetopt.errors import ProblemError
from cetopt.spec import ModelSpec, from_legacy_dict
from cetopt.zoo.registry import is_zoo_name, load_zoo, zoo_names

__all__ = ["OBJECTIVES", "ModelSpec", "check_target", "choose_model", "load_model_spec", "normalise_target",
           "objective_of", "same_target"]


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
        return from_legacy_dict(value, target)
    raise ProblemError(f"{target} returned {type(value).__name__}; return a cetopt.ModelSpec", field="model")

"""The zoo registry: model name -> the function that builds its :class:`cetopt.spec.ModelSpec`.

Adding a zoo model is one factory function (anywhere importable) plus one ``register`` line below; nothing
is imported until the model is asked for, so listing and rejecting names is instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cetopt._imports import resolve
from cetopt.errors import ProblemError

if TYPE_CHECKING:
    from cetopt.spec import ModelSpec

_ZOO: dict[str, str] = {}


def register(name: str, target: str, *, replace: bool = False) -> None:
    """Register zoo model ``name`` built by ``target`` ("package.module:function", called with zoo options)."""
    if name in _ZOO and not replace:
        raise ProblemError(f"a zoo model named {name!r} is already registered; pass replace=True", field="name")
    _ZOO[name] = target


def zoo_names() -> tuple[str, ...]:
    """Every registered zoo model, in registration order."""
    return tuple(_ZOO)


def is_zoo_name(name: str) -> bool:
    return name in _ZOO


def load_zoo(name: str, **options: Any) -> "ModelSpec":
    """The ModelSpec of zoo model ``name`` (trained and cached on first use, or loaded from shipped weights).

    Args:
        options: factory options: seed, calibration_size, batch_size (each factory documents its own).
    """
    if name not in _ZOO:
        raise ProblemError(f"unknown zoo model {name!r}; the zoo has: {', '.join(_ZOO)}", field="model")
    factory = resolve(_ZOO[name])
    return factory(**options)


register("digits-cnn", "cetopt.zoo.specs:digits_cnn")
register("digits-mlp", "cetopt.zoo.specs:digits_mlp")
register("mnist1d-resnet", "cetopt.zoo.specs:mnist1d_resnet")
register("mobilenetv2", "cetopt.zoo.specs:mobilenetv2")
register("minilm", "cetopt.zoo.specs:minilm")

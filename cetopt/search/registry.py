"""The search-strategy registry: name -> "module:Class", imported only when the strategy is used.

Adding a strategy is one module (a class with ``name``, ``description``, ``Options`` and ``search``; see
:mod:`cetopt.search.base`) plus one ``register`` line below.
"""

from __future__ import annotations

from typing import Any

from cetopt._imports import resolve
from cetopt.errors import ProblemError

_REGISTRY: dict[str, Any] = {}


def register(name: str, target: str | type, *, replace: bool = False) -> None:
    """Register a strategy under ``name`` (an import string "pkg.module:Class" or a class)."""
    if name in _REGISTRY and not replace:
        raise ProblemError(f"a search strategy named {name!r} is already registered; pass replace=True",
                           field="search")
    _REGISTRY[name] = target


def strategy_names() -> list[str]:
    return list(_REGISTRY)


def get_strategy(name: str) -> Any:
    """A fresh instance of the strategy ``name``.

    Raises:
        ProblemError(field="search"): an unknown name (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ProblemError(f"unknown search strategy {name!r}; choose from {', '.join(_REGISTRY)}", field="search")
    target = _REGISTRY[name]
    if isinstance(target, str):
        target = resolve(target)
        _REGISTRY[name] = target
    return target()


register("evopress", "cetopt.search.evopress:EvoPress")
register("local", "cetopt.search.local:LocalSearch")
register("refit", "cetopt.search.refit:Refit")

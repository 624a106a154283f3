"""The search-strategy registry: name -> "module:Class", imported only when the strategy is used.

Adding a strategy is one module (a class with ``name``, ``description``, ``Options`` and ``search``: the
:class:`SearchStrategy` protocol; see :mod:`cetopt.search.base`) plus one ``register`` line below.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Sequence

import numpy as np

from cetopt._imports import resolve
from cetopt.errors import ProblemError
from cetopt.search.base import Seed
from cetopt.search.evaluator import Evaluator

class SearchStrategy(Protocol):
    """A registered search strategy (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type]

    def search(self, evaluator: Evaluator, seeds: Sequence[Seed], options: Any,
               rng: np.random.Generator) -> list[np.ndarray]:
        """Spend the evaluator's budget; return contenders (option vectors), best first. May stop early; the
        evaluator raises :class:`~cetopt.search.evaluator.BudgetSpent` when the budget is gone, which the strategy
        need not catch: :func:`~cetopt.search.api.run_search` then asks :meth:`Evaluator.ranked` instead."""
        ...


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

"""The solver contract: what a backend declares, what it may refuse, and what it returns.

A backend is one class in one module plus one line in :mod:`cetopt.solvers.registry`::

    @dataclass(frozen=True)
    class MyOptions:
        iterations: int = 100

    class MySolver(Solver):
        name = "mine"
        requires = ("somepackage",)
        capabilities = Capabilities(exact=True, proves_bound=True)
        Options = MyOptions

        def run(self, compiled, options, *, time_limit, seed) -> Outcome: ...

``cetopt.solve`` validates options, checks ``unsupported()``, times ``run`` and re-scores its answer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from cetopt.errors import SolverOptionError, SolverUnavailableError
from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize
from cetopt.solvers.result import Outcome


@dataclass(frozen=True)
class Capabilities:
    """What a backend can take.

    Attributes:
        exact: proves optimality when it finishes.
        proves_bound: reports a proven lower bound even when not exact.
        interactions: accepts pairwise interaction terms.
        minimize_size: accepts ``minimize: size`` problems.
        resources: the resource budgets it handles ({"size", "bops"}).
        max_resources: how many resource budgets it handles at once.
        loss_bound: accepts ``max_loss`` while minimising loss.
        max_groups: largest number of groups (layers after ties) it accepts, or None.
    """

    exact: bool = False
    proves_bound: bool = False
    interactions: bool = False
    minimize_size: bool = True
    resources: frozenset[str] = field(default_factory=lambda: frozenset({"size", "bops"}))
    max_resources: int = 2
    loss_bound: bool = True
    max_groups: int | None = None


@dataclass(frozen=True)
class NoOptions:
    """A backend without options."""


class Solver(ABC):
    """Base class of every backend (see the module docstring for how to write one)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    Options: ClassVar[type] = NoOptions
    # seconds per group the backend spends before it can stop on time (fitting, building its model); when less
    # time than that is left of a limit, solve() answers with the greedy incumbent instead of overrunning
    startup_seconds_per_group: ClassVar[float] = 0.0

    @classmethod
    def is_installed(cls) -> bool:
        """Whether the required packages are importable (checked without importing them)."""
        return all(importlib.util.find_spec(module) is not None for module in cls.requires)

    @classmethod
    def missing_packages(cls) -> list[str]:
        return [module for module in cls.requires if importlib.util.find_spec(module) is None]

    def ensure_installed(self) -> None:
        """Raise SolverUnavailableError naming the install command when a package is missing."""
        missing = self.missing_packages()
        if missing:
            hint = self.install_hint or f"pip install {' '.join(missing)}"
            raise SolverUnavailableError(f"backend '{self.name}' needs {', '.join(missing)}: {hint}")

    def make_options(self, options: Mapping[str, Any]) -> Any:
        """Build the typed options dataclass, refusing unknown names and wrong types."""
        known = {f.name: f for f in dataclasses.fields(self.Options)}
        unknown = [key for key in options if key not in known]
        if unknown:
            listing = ", ".join(known) if known else "none"
            raise SolverOptionError(f"{self.name}: unknown option {unknown[0]!r}; known options: {listing}")
        checked = {}
        for key, value in options.items():
            default = getattr(self.Options(), key)
            checked[key] = _coerce(self.name, key, value, default)
        return self.Options(**checked)

    def unsupported(self, compiled: CompiledProblem) -> list[str]:
        """Reasons this backend cannot take ``compiled``; an empty list means it can."""
        caps = self.capabilities
        reasons = []
        if compiled.has_interactions and not caps.interactions:
            reasons.append("it does not handle interaction terms (use ortools, ortools-mip, highs or cvxpy)")
        if compiled.minimize is Minimize.SIZE and not caps.minimize_size:
            reasons.append("it does not minimise size (minimize: size)")
        resources = compiled.resources()
        names = [name for name, _, _ in resources]
        for name in names:
            if name not in caps.resources:
                reasons.append(f"it does not handle a {name} budget")
        if len(names) > caps.max_resources:
            reasons.append(f"it handles at most {caps.max_resources} resource budget(s), got {names}")
        if compiled.minimize is Minimize.LOSS and compiled.max_loss is not None and not caps.loss_bound:
            reasons.append("it does not handle max_loss while minimising loss")
        if caps.max_groups is not None and compiled.n_groups > caps.max_groups:
            reasons.append(f"it takes at most {caps.max_groups} layers/tie groups, got {compiled.n_groups}")
        return reasons

    @abstractmethod
    def run(self, compiled: CompiledProblem, options: Any, *, time_limit: float | None, seed: int) -> Outcome:
        """Solve ``compiled``; return an Outcome (never raise for infeasibility or limits)."""


def _coerce(solver: str, key: str, value: Any, default: Any) -> Any:
    """Check an option value against its default's type (ints accepted for floats; None allowed)."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    else:
        return value
    raise SolverOptionError(f"{solver}: option {key!r} expects {type(default).__name__}, got {value!r}")

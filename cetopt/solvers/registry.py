"""The backend registry: name -> "module:Class", imported only when the backend is used.

Adding a backend is one module plus one ``register`` line below. Third-party code (or a notebook) can
register its own class or import string; a name clash raises unless ``replace=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cetopt._imports import resolve
from cetopt.errors import SolverOptionError
from cetopt.solvers.base import Solver

_REGISTRY: dict[str, str | type[Solver]] = {}


def register(name: str, target: str | type[Solver], *, replace: bool = False) -> None:
    """Register a backend under ``name`` (an import string "pkg.module:Class" or a Solver subclass)."""
    if name in _REGISTRY and not replace:
        raise SolverOptionError(f"a backend named {name!r} is already registered; pass replace=True to override")
    _REGISTRY[name] = target


def unregister(name: str) -> None:
    """Remove a backend (so a notebook can re-register a new version)."""
    _REGISTRY.pop(name, None)


def backend_class(name: str) -> type[Solver]:
    """The Solver class registered as ``name`` (imports its module, not its solver library)."""
    if name not in _REGISTRY:
        raise SolverOptionError(f"unknown solver {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        target = resolve(target)
        _REGISTRY[name] = target
    return target


def get_solver(name: str) -> Solver:
    """A fresh instance of the backend ``name``."""
    return backend_class(name)()


@dataclass(frozen=True)
class SolverInfo:
    """One registered backend: its name, whether its packages are installed, what it is."""

    name: str
    installed: bool
    exact: bool
    description: str


def available_solvers() -> list[SolverInfo]:
    """Every registered backend, with whether it can run here (nothing heavy is imported)."""
    out = []
    for name in _REGISTRY:
        cls = backend_class(name)
        out.append(SolverInfo(name=name, installed=cls.is_installed(), exact=cls.capabilities.exact,
                              description=cls.description))
    return out


register("dp", "cetopt.solvers.dp:DPSolver")
register("greedy", "cetopt.solvers.greedy:GreedySolver")
register("ortools", "cetopt.solvers.ortools_cpsat:CpSatSolver")
register("ortools-mip", "cetopt.solvers.ortools_mip:OrToolsMipSolver")
register("highs", "cetopt.solvers.highs:HighsSolver")
register("cvxpy", "cetopt.solvers.cvxpy_relax:CvxpyRelaxationSolver")
register("waterfilling", "cetopt.solvers.waterfilling:WaterfillingSolver")
register("bruteforce", "cetopt.solvers.bruteforce:BruteForceSolver")

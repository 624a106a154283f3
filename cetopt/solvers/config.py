"""Solver configurations: the small declarative TOML files in ``solvers/`` (backend + options).

Example ``solvers/ortools-10s.toml``::

    backend = "ortools"
    description = "CP-SAT, 2 workers, 10 s limit"
    time_limit = 10.0
    [options]
    workers = 2

``cetopt solve --solver-config solvers/ortools-10s.toml`` and the benchmark runner read these files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cetopt.errors import SolverOptionError

_KEYS = ("name", "backend", "description", "time_limit", "seed", "options")
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class SolverConfig:
    """A named solver configuration.

    Attributes:
        name: display name (the file stem unless the file says otherwise).
        backend: registered backend name.
        options: backend options.
        time_limit: seconds, or None.
        seed: random seed passed to the backend.
        description: one line for tables.
    """

    name: str
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    seed: int = 0
    description: str = ""


def parse_solver_config(data: Mapping[str, Any], *, default_name: str, source: str = "<config>") -> SolverConfig:
    """Validate a parsed TOML mapping into a SolverConfig; errors name the file and key."""
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise SolverOptionError(f"{source}: unknown key {unknown[0]!r}; allowed keys are {list(_KEYS)}")
    backend = data.get("backend")
    if not isinstance(backend, str) or not backend:
        raise SolverOptionError(f"{source}: 'backend' must name a solver backend, e.g. backend = \"ortools\"")
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise SolverOptionError(f"{source}: [options] must be a table")
    time_limit = data.get("time_limit")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not 0 < time_limit <= 1e7):  # NaN fails this too
        raise SolverOptionError(f"{source}: time_limit must be a positive number of seconds (at most 1e7), "
                                f"got {time_limit!r}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SolverOptionError(f"{source}: seed must be an integer in 0..{MAX_SEED}, got {str(seed)[:40]}")
    bad = [key for key, value in dict(options).items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        raise SolverOptionError(f"{source}: options.{bad[0]} is {options[bad[0]]!r}; use a finite number")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SolverOptionError(f"{source}: name must be a non-empty string")
    return SolverConfig(name=name, backend=backend, options=dict(options),
                        time_limit=float(time_limit) if time_limit is not None else None, seed=seed,
                        description=str(data.get("description", "")))


def load_solver_config(path: str | os.PathLike[str]) -> SolverConfig:
    """Read one ``solvers/*.toml`` file (a regular file of at most MAX_CONFIG_BYTES)."""
    from cetopt.errors import ProblemError
    from cetopt.inputs import parse_toml, read_regular_file

    file = Path(path)
    try:
        data = parse_toml(read_regular_file(file, MAX_CONFIG_BYTES, "solver config"), str(file))
    except ProblemError as err:
        raise SolverOptionError(str(err)) from None
    return parse_solver_config(data, default_name=file.stem, source=str(file))


def load_solver_configs(folder: str | os.PathLike[str]) -> list[SolverConfig]:
    """Every ``*.toml`` config in ``folder``, sorted by name."""
    return sorted((load_solver_config(p) for p in Path(folder).glob("*.toml")), key=lambda c: c.name)

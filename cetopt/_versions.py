"""Installed versions of cetopt and its numerical stack, recorded in results (read from package metadata,
so nothing is imported)."""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

__version__ = "0.1.0"
"""cetopt's own version (the same as pyproject.toml's); ``cetopt.__version__`` re-exports it."""

PACKAGES = ("cetopt", "numpy", "scipy", "torch", "cvxpy", "ortools", "highspy", "networkx")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Package -> installed version (None when absent)."""
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found

"""One way every registry turns its ``"package.module:attribute"`` entries into objects, importing the module only
when the entry is first used (so a registry lists its names without loading torch, cvxpy or OR-Tools).

The strings are cetopt's own registry lines, never values read from a user's file.
"""

from __future__ import annotations

import importlib
from typing import Any


def resolve(target: str) -> Any:
    """The attribute named by ``"package.module:attribute"`` (its module imported on the first call)."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)

"""The registered roundings, by import string (nothing loads until a rounding is asked for).

Adding a rounding is one file in this package (a :class:`cetopt.quant.rounding.base.Rounding`) plus one line
here; tests/quant/rounding/test_conformance.py enrolls every entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cetopt._imports import resolve
from cetopt.errors import ProblemError

if TYPE_CHECKING:
    from cetopt.quant.rounding.base import Rounding

ROUNDING_CLASSES = {
    "nearest": "cetopt.quant.rounding.nearest:Nearest",
    "mse": "cetopt.quant.rounding.mse:MseClip",
    "major-axis": "cetopt.quant.rounding.major_axis:MajorAxis",
    "major-axis-gradient": "cetopt.quant.rounding.major_axis:MajorAxisGradient",
    "adaround": "cetopt.quant.rounding.adaround:AdaRound",
    "gptq": "cetopt.quant.rounding.gptq:Gptq",
}
ROUNDINGS = tuple(ROUNDING_CLASSES)


def get_rounding(name: str) -> "Rounding":
    """The registered rounding called ``name``."""
    if name not in ROUNDING_CLASSES:
        raise ProblemError(f"unknown rounding {name!r}; use one of {ROUNDINGS}", field="rounding")
    return resolve(ROUNDING_CLASSES[name])()

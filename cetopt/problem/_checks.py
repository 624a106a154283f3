"""Field checks shared by the dataclasses and the JSON loader; each raises ProblemError naming the field."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

from cetopt.errors import ProblemError

MAX_BITS = 64  # widest bit-width a choice may name (FP64); wider is certainly a typo


@contextmanager
def at(path: str) -> Iterator[None]:
    """Nest any ProblemError raised inside under the field path ``path``."""
    try:
        yield
    except ProblemError as err:
        raise err.under(path) from None


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


MAX_EXACT_INT = 2 ** 53  # integers a float64 represents exactly


def check_int(value: Any, field: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``field`` (bools and floats with fractions refused)."""
    if _is_bool(value) or not isinstance(value, (int, float)):
        raise ProblemError(f"expected an integer, got {type(value).__name__} {value!r:.40}", field=field)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ProblemError(f"expected an integer, got {value!r}", field=field)
        value = int(value)
    if abs(value) > MAX_EXACT_INT:
        raise ProblemError(f"expected an integer of magnitude <= 2^53 (counts beyond that cannot be added exactly), "
                           f"got {str(value)[:40]}{'...' if len(str(value)) > 40 else ''}", field=field)
    if low is not None and value < low:
        raise ProblemError(f"expected an integer >= {low}, got {value}", field=field)
    if high is not None and value > high:
        raise ProblemError(f"expected an integer <= {high}, got {value}", field=field)
    return int(value)


def check_float(value: Any, field: str, *, low: float | None = None, positive: bool = False) -> float:
    """Return ``value`` as a finite float, or raise naming ``field``."""
    if _is_bool(value) or not isinstance(value, (int, float)):
        raise ProblemError(f"expected a number, got {type(value).__name__} {value!r:.40}", field=field)
    try:
        number = float(value)
    except OverflowError:
        raise ProblemError(f"expected a finite number, got an integer with {len(str(value))} digits", field=field) from None
    if not math.isfinite(number):
        raise ProblemError(f"expected a finite number, got {value!r}", field=field)
    if positive and number <= 0:
        raise ProblemError(f"expected a number > 0, got {value!r}", field=field)
    if low is not None and number < low:
        raise ProblemError(f"expected a number >= {low}, got {value!r}", field=field)
    return number


def check_name(value: Any, field: str) -> str:
    """Return a non-empty string, or raise naming ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise ProblemError(f"expected a non-empty string, got {value!r:.40}", field=field)
    if len(value) > 1024:
        raise ProblemError(f"names are at most 1024 characters, got {len(value)}", field=field)
    return value

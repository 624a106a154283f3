"""Checked command-line values: argparse types that refuse bad numbers with the flag named (argparse
then exits 2 with the message), and the check of an ``--out`` target before any work is done."""

from __future__ import annotations

import argparse
import math
import os
import stat
from pathlib import Path
from typing import Callable

from cetopt.errors import ProblemError

MAX_SEED = 2**32 - 1


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (5000-digit numbers are refused, not converted)."""
    def parse(text: str) -> int:
        digits = text.strip().lstrip("+-")
        if not digits.isdigit() or len(digits) > 20:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text[:40]!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, high: float = math.inf, *, low_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite float in (low, high] (or [low, high]); NaN and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or value > high:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"expected a finite number in {interval}, got {text[:40]!r}")
        return value

    parse.__name__ = "number"
    return parse


def check_out_target(path: Path, flag: str = "--out") -> None:
    """Refuse an output path that is a directory, a device/FIFO/socket, or in a folder that is missing or not
    writable, before any work is done (the write itself is atomic and never renames over such a file)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as err:
        raise ProblemError(f"cannot use {str(path)!r}: {err.strerror}", field=flag) from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ProblemError(f"{str(path)!r} is {kind}; give a file path", field=flag)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:  # missing folders are created by the writer
        parent = parent.parent
    if not parent.is_dir():
        raise ProblemError(f"{str(parent)!r} is not a folder", field=flag)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ProblemError(f"folder {str(parent)!r} is not writable", field=flag)

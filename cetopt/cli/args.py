"""Shared pieces of the command line: exit codes, checked argparse types, budget flags, option parsing.

Nothing here imports numpy or torch, so an unknown model name is refused before either loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Callable, Sequence

from cetopt.errors import ProblemError, SolverOptionError

EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT, EXIT_FAILED = 0, 1, 2, 3

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


BUDGET_FLAGS = (("avg_bits", "--avg-bits"), ("size_bits", "--size-bits"), ("size_bytes", "--size-bytes"),
                 ("ratio", "--ratio"), ("bops", "--bops"), ("max_loss", "--max-loss"))


def option_value(text: str) -> Any:
    """A ``-o KEY=VALUE`` value: JSON when it parses, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
    except (ValueError, RecursionError) as err:  # an integer over the digit limit, nesting past the recursion limit
        raise SolverOptionError(f"--option value {text[:40]!r}...: {str(err)[:120] or 'nested too deeply'}") from None


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SolverOptionError(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = option_value(value)
    return options


# the --avg-bits validator of every command that takes a budget (make-problem's synthetic budget included)
AVG_BITS = float_in(0.0, 64.0)


def add_budget_flags(parser: argparse.ArgumentParser, title: str) -> None:
    """The budget flags of every command that takes a budget (solve, compare, extract, plan, demo), under ``title``
    (what happens when none is given); any subset may be given and all given ones hold at once
    (cetopt.problem.budget.Budget). :func:`budget_from_args` reads them."""
    group = parser.add_argument_group("budget", title)
    group.add_argument("--avg-bits", type=AVG_BITS, help="mean bits per quantised weight (size budget)")
    group.add_argument("--size-bits", type=float_in(0.0), help="total size in bits")
    group.add_argument("--size-bytes", type=float_in(0.0), help="total size in bytes")
    group.add_argument("--ratio", type=float_in(0.0), help="compression ratio vs FP32")
    group.add_argument("--bops", type=float_in(0.0), help="total bit-operations")
    group.add_argument("--max-loss", type=float_in(-math.inf), help="bound on the total predicted loss change (alone: "
                       "the size is minimised under it)")


def budget_from_args(args: argparse.Namespace) -> Any:
    """The cetopt.problem.budget.Budget of the given budget flags, None when none is given."""
    from cetopt.problem.budget import Budget

    given = {key: getattr(args, key) for key, _ in BUDGET_FLAGS if getattr(args, key, None) is not None}
    return Budget(**given) if given else None


def load_with_overrides(args: argparse.Namespace) -> Any:
    from cetopt.problem.io import load_problem

    problem = load_problem(args.problem)
    budget = budget_from_args(args)
    changes: dict[str, Any] = {}
    if budget is not None:
        changes["budget"] = budget
    if args.minimize:
        changes["minimize"] = args.minimize
    return problem.with_changes(**changes) if changes else problem


def exit_code(status: Any) -> int:
    return EXIT_OK if status.value in ("optimal", "feasible") else \
        EXIT_FAILED if status.value == "error" else EXIT_INFEASIBLE


def int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ProblemError(f"expects comma-separated integers, got {text!r}", field=option) from None


def float_list(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ProblemError(f"expects comma-separated numbers, got {text!r}", field=option) from None


MODEL_HELP = ("a zoo model (digits-cnn, digits-mlp, mnist1d-resnet, mobilenetv2, minilm), module:function or "
               "path/to/file.py:function returning a cetopt.ModelSpec (see README, 'Your own model')")


class CostModelNames:
    """argparse choices read from the cost-model registry only when checked or shown (the registry imports
    numpy; `cetopt extract nosuch` must answer before that)."""

    def _names(self) -> tuple[str, ...]:
        from cetopt.costmodels.registry import cost_model_names

        return cost_model_names()

    def __contains__(self, item: object) -> bool:
        return item in self._names()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._names())



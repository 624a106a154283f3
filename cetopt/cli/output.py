"""``--format json`` for every command that writes a result: in json mode the command's human-readable lines go to
stderr with the logs, and the one JSON document it hands to :func:`emit` is printed on stdout when it returns.

Commands with their own ``--format`` handling (solve, compare, evaluate) print their JSON themselves; every other
command gets the flag from :func:`add_format_flag` and calls :func:`emit` once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, Callable, Iterator

_DOCUMENT = "_json_document"


def add_format_flag(command: argparse.ArgumentParser) -> None:
    """Give ``command`` ``--format {table,json}`` handled here (unless it declares ``--format`` itself)."""
    known = {opt for action in command._actions for opt in action.option_strings}
    if "--format" in known:
        return
    command.add_argument("--format", choices=("table", "json"), default="table",
                         help="table: readable lines on stdout; json: one JSON document on stdout, the lines on stderr")
    command.set_defaults(_generic_format=True)


def emit(args: argparse.Namespace, document: Any) -> None:
    """Record the command's result; printed as JSON on stdout in json mode (ignored in table mode)."""
    setattr(args, _DOCUMENT, document)


def _jsonable(value: Any) -> Any:
    """Paths and other plain objects as text; everything json.dumps takes unchanged."""
    return str(value)


def run(args: argparse.Namespace, func: Callable[[argparse.Namespace], int]) -> int:
    """Run the command; in generic json mode, its printed lines go to stderr and its emitted document to stdout.
    A process that emits nothing prints nothing (a torchrun rank other than 0: rank 0 writes and reports)."""
    if not (getattr(args, "_generic_format", False) and args.format == "json"):
        return int(func(args))
    with _stdout_to_stderr():
        code = int(func(args))
    if not hasattr(args, _DOCUMENT):
        return code
    print(json.dumps(getattr(args, _DOCUMENT), allow_nan=False, default=_jsonable))
    return code


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield

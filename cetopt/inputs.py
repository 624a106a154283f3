"""Bounded readers for every JSON and TOML input (problems, plans, artefact manifests, solver configs).

A file given to cetopt is untrusted data. :func:`read_regular_file` refuses anything but a regular file
(a FIFO would block, ``/dev/zero`` would never end, a device or folder is not a file) and caps the bytes
read; :func:`parse_json` / :func:`parse_toml` refuse, with the field named, what would otherwise be accepted
silently or end in a traceback: duplicate keys (JSON keeps the last one), integers longer than a digit
limit (Python's conversion is quadratic in the digits), nesting deeper than a depth limit, NaN/Infinity.

Limits (bytes per kind below) can be changed with the environment variable ``CETOPT_MAX_INPUT_BYTES``
(one number for every kind), e.g. for a problem file of more than 512 MiB.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Callable

from cetopt.errors import ProblemError

MiB = 1024 * 1024
MAX_BYTES = {"problem file": 512 * MiB, "plan": 64 * MiB, "manifest": 1 * MiB, "solver config": 1 * MiB,
             "artefact metadata": 64 * MiB}
DEFAULT_MAX_BYTES = 64 * MiB
MAX_INT_DIGITS = 4300  # Python's own default limit (sys.get_int_max_str_digits()); no cetopt number comes near it
MAX_DEPTH = 64  # nesting levels of free-form values (metadata, extra); a format's own fields are shallower
ENV_LIMIT = "CETOPT_MAX_INPUT_BYTES"


def max_bytes(what: str) -> int:
    """The byte cap for an input of kind ``what`` (``CETOPT_MAX_INPUT_BYTES`` overrides every kind)."""
    text = os.environ.get(ENV_LIMIT)
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ProblemError(f"expected a positive number of bytes, got {text[:40]!r}", field=ENV_LIMIT)
        return value
    return MAX_BYTES.get(what, DEFAULT_MAX_BYTES)


def read_regular_file(path: str | os.PathLike[str], limit: int | None, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (None: :func:`max_bytes` of ``what``).

    Devices, FIFOs, sockets and folders are refused before they are opened for reading (a FIFO would
    block, /dev/zero would never end), again on the open descriptor (a swap in between), and the cap holds
    while reading (a file that grows). A sparse file is refused by its size before any byte is read.
    """
    limit = max_bytes(what) if limit is None else limit
    file = Path(path)
    try:
        info = os.stat(file)
    except OSError as err:
        raise ProblemError(f"cannot read {what} {str(file)!r}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise ProblemError(f"{what} {str(file)!r} is {kind}; give a file")
    if info.st_size > limit:
        raise ProblemError(f"{file}: {info.st_size} bytes is over the {limit}-byte limit for a {what} (raise it "
                           f"with {ENV_LIMIT}=BYTES if the file is genuine)")
    try:
        # O_NONBLOCK: a path swapped for a FIFO after the stat above opens without blocking, then is refused
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise ProblemError(f"cannot read {what} {str(file)!r}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ProblemError(f"{what} {str(file)!r} is not a regular file; give a file")
            raw = handle.read(limit + 1)
    except OSError as err:
        raise ProblemError(f"cannot read {what} {str(file)!r}: {err.strerror}") from None
    if len(raw) > limit:
        raise ProblemError(f"{file}: over the {limit}-byte limit for a {what} (raise it with {ENV_LIMIT}=BYTES)")
    return raw


class _Duplicate(dict):  # type: ignore[type-arg]
    """An object that repeated a key (the slow pass builds these, then :func:`_find` names the path)."""

    def __init__(self, key: str, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.key = key


class _HugeInt:
    def __init__(self, digits: int) -> None:
        self.digits = digits


class NonFiniteLiteral:
    """Stands in for a NaN / Infinity literal while parsing, so the validator that meets it names its field
    ("layers[3].choices[1].loss: expected a number, got NaN") instead of failing without a path."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"{self.text} (not valid JSON; use a finite number)"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


class _DuplicateKey(Exception):
    pass


def _walk(value: Any, test: Callable[[Any], bool], path: str = "", max_depth: int | None = None) -> \
        tuple[str, Any] | None:
    """The first (path, node) where ``test(node)`` holds or the depth passes ``max_depth`` (iterative: no
    recursion however deep the value)."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if test(node):
            return where, node
        if max_depth is not None and depth > max_depth:
            return where, None
        if isinstance(node, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in reversed(list(enumerate(node))))
    return None


def check_tree(value: Any, field: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse ``value`` when it is nested more than ``max_depth`` levels of objects/lists or holds a NaN /
    Infinity literal (:class:`NonFiniteLiteral`), naming where."""
    found = _walk(value, lambda n: isinstance(n, NonFiniteLiteral), field, max_depth)
    if found is None:
        return
    where, node = found
    if isinstance(node, NonFiniteLiteral):
        raise ProblemError(f"{node.text} is not valid JSON; use a finite number or null", field=where or None)
    raise ProblemError(f"nested more than {max_depth} levels deep; flatten it", field=where or None)


def _locate(text: str | bytes, digits: int) -> tuple[str, str]:
    """The slow pass after the fast one failed: parse with markers, return (field, reason)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                return _Duplicate(key, items)
            seen.add(key)
        return dict(items)

    def parse_int(s: str) -> Any:
        return _HugeInt(len(s.lstrip("-"))) if len(s.lstrip("-")) > digits else int(s)

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_int=parse_int, parse_constant=NonFiniteLiteral)
    except RecursionError:
        return "", "nested too deeply"
    except ValueError as err:
        return "", f"not valid JSON ({err})"
    found = _walk(data, lambda n: isinstance(n, (_Duplicate, _HugeInt)))
    if found is None:
        return "", "not valid JSON"
    where, node = found
    if isinstance(node, _Duplicate):
        return (f"{where}.{node.key}" if where else node.key), \
            f"the key {node.key!r} appears twice in one object (JSON would keep the last silently); keep one"
    return where, f"an integer of {node.digits} digits (the limit is {digits}); use a realistic number"


def parse_json(text: str | bytes, source: str = "<string>", *, max_int_digits: int = MAX_INT_DIGITS,
               max_depth: int | None = MAX_DEPTH) -> Any:
    """Parse JSON text from an untrusted file.

    ``max_depth`` None skips the walk over the parsed value (a caller whose validators type-check every level
    and walk its free-form fields with :func:`check_tree` itself; then NaN / Infinity literals stay in the
    value as :class:`NonFiniteLiteral`, for the validator that meets one to name its field; input nested
    deeper than the interpreter's recursion limit is still refused). Otherwise the value is walked once:
    depth and NaN / Infinity are refused with the field named.

    Raises:
        ProblemError: not JSON or not UTF-8, a duplicate key, an integer over ``max_int_digits`` digits, or
            nesting over ``max_depth`` levels; the message names the source and the field.
    """
    previous = sys.get_int_max_str_digits()
    try:
        # the interpreter's own limit, tightened for the parse, keeps the fast C decoder; an over-long
        # integer fails it and the slow pass below names the field
        sys.set_int_max_str_digits(max(640, max_int_digits) if previous == 0 else min(previous, max(640, max_int_digits)))
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=NonFiniteLiteral)
    except RecursionError:
        raise ProblemError(f"{source}: JSON nested too deeply (more than {sys.getrecursionlimit()} levels)") from None
    except (_DuplicateKey, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError and int digits are ValueErrors
        if isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)):
            raise ProblemError(f"{source}: not valid JSON ({err})") from None
        field, reason = _locate(text, min(max_int_digits, sys.get_int_max_str_digits() or max_int_digits))
        raise ProblemError(f"{source}: {reason}", field=field or None) from None
    finally:
        sys.set_int_max_str_digits(previous)
    if max_int_digits < 640:  # below the interpreter's floor: check the parsed integers themselves
        found = _walk(data, lambda n: isinstance(n, int) and not isinstance(n, bool)
                      and len(str(abs(n))) > max_int_digits)
        if found is not None:
            raise ProblemError(f"{source}: an integer over {max_int_digits} digits", field=found[0] or None)
    if max_depth is not None:
        try:
            check_tree(data, "", max_depth)
        except ProblemError as err:
            raise ProblemError(f"{source}: {err.reason}", field=err.field) from None
    return data


def load_json_file(path: str | os.PathLike[str], what: str, *, limit: int | None = None,
                   max_depth: int | None = MAX_DEPTH) -> Any:
    """A bounded read (:func:`read_regular_file`) and a checked parse (:func:`parse_json`) of one JSON file."""
    return parse_json(read_regular_file(path, limit, what), str(path), max_depth=max_depth)


def parse_toml(text: bytes, source: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse TOML from an untrusted file (TOML itself refuses duplicate keys); errors name the source."""
    import tomllib

    try:
        data = tomllib.loads(text.decode("utf-8"))
    except RecursionError:
        raise ProblemError(f"{source}: TOML nested too deeply") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProblemError(f"{source}: not valid TOML ({err})") from None
    except ValueError as err:  # an integer over the interpreter's digit limit
        raise ProblemError(f"{source}: not usable TOML ({err})") from None
    try:
        check_tree(data, "", max_depth)
    except ProblemError as err:
        raise ProblemError(f"{source}: {err.reason}", field=err.field) from None
    return data

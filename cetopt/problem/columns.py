"""Layers held as columns: the fast path for problems of 10^5 - 10^6 layers.

A problem file may give its layers as columns instead of a list of objects (``cetopt.problem/1`` accepts both;
docs/problem-format.md)::

    "layers": {"name": ["l0", "l1"], "params": [4096, 65536],
               "bits": [[2, 4, 8], [2, 4, 8]], "loss": [[0.31, 0.02, 0.0], [0.5, 0.1, 0.01]]}

which is the row form ``[{"name": "l0", "params": 4096, "choices": [{"bits": 2, "loss": 0.31}, ...]}, ...]``
with nothing else per layer or choice. At 100,000 layers x 8 choices the row form means 900,000 Python
objects to parse, validate and build; the columns are parsed as number arrays, validated
vectorised with the same rules and messages as :class:`~cetopt.problem.model.Layer`, and kept as NumPy
arrays. :class:`LayerColumns` is a read-only sequence of :class:`Layer` (built on demand), so every consumer
keeps working; the hot paths (compile, evaluate, the result's bits) read the arrays.
"""

from __future__ import annotations

import itertools
import math
from functools import cached_property
from typing import Any, Iterator, Sequence, overload

import numpy as np

from cetopt.errors import ProblemError
from cetopt.problem._checks import MAX_BITS, MAX_EXACT_INT, check_name
from cetopt.problem.layer import Choice, Layer

COLUMN_KEYS = ("name", "params", "bits", "loss")
OPTIONAL_KEYS = ("macs",)


class LayerColumns(Sequence[Any]):
    """L layers with N choices in all, each choice a (bits, loss) pair and each size params x bits.

    Attributes:
        names: (L,) layer names, unique.
        params: (L,) int64 weights per layer (>= 1).
        start: (L + 1,) int64; layer i's choices are entries start[i]:start[i + 1] of the flat arrays.
        bits: (N,) int64 bit-width of each choice (1..MAX_BITS, unique within a layer).
        loss: (N,) float64 predicted loss of each choice (finite).
        macs: (L,) int64 multiply-accumulates per layer (BOPs = macs x bits x activation bits), or None.
    """

    def __init__(self, names: Sequence[str], params: np.ndarray, start: np.ndarray, bits: np.ndarray,
                 loss: np.ndarray, macs: np.ndarray | None = None) -> None:
        self.names = tuple(names)
        self.params, self.start, self.bits, self.loss, self.macs = params, start, bits, loss, macs
        for array in (params, start, bits, loss, macs):
            if array is not None:
                array.setflags(write=False)
        self._layers: list[Any] | None = None

    # ------------------------------------------------------------------ arrays the hot paths read
    @cached_property
    def counts(self) -> np.ndarray:
        """(L,) number of choices per layer."""
        return np.diff(self.start)

    @cached_property
    def size_bits(self) -> np.ndarray:
        """(N,) float64 storage of each choice in bits (params x bits: exact below 2^53)."""
        size = np.repeat(self.params, self.counts).astype(np.float64) * self.bits
        size.setflags(write=False)
        return size

    @cached_property
    def index(self) -> dict[str, int]:
        """Layer name -> position."""
        return {name: i for i, name in enumerate(self.names)}

    def chosen(self, choice_index: np.ndarray) -> np.ndarray:
        """(L,) flat positions of one choice index per layer (indices already checked in range)."""
        return self.start[:-1] + choice_index

    # ------------------------------------------------------------------ the Sequence[Layer] view
    def __len__(self) -> int:
        return len(self.names)

    def _layer(self, i: int) -> Layer:
        lo, hi = int(self.start[i]), int(self.start[i + 1])
        choices = tuple(Choice(bits=int(b), loss=float(v)) for b, v in zip(self.bits[lo:hi], self.loss[lo:hi]))
        macs = None if self.macs is None else int(self.macs[i])
        return Layer(name=self.names[i], params=int(self.params[i]), choices=choices, macs=macs)

    def _all(self) -> list[Any]:
        if self._layers is None:
            self._layers = [self._layer(i) for i in range(len(self))]
        return self._layers

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Any, ...]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return tuple(self._all()[i])
        if self._layers is not None:
            return self._layers[i]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._layer(i % n)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LayerColumns):
            same_macs = (self.macs is None) == (other.macs is None) and (
                self.macs is None or np.array_equal(self.macs, other.macs))
            return (same_macs and self.names == other.names and np.array_equal(self.params, other.params)
                    and np.array_equal(self.start, other.start) and np.array_equal(self.bits, other.bits)
                    and np.array_equal(self.loss, other.loss))
        if isinstance(other, (tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.names, self.params.tobytes(), self.bits.tobytes(), self.loss.tobytes()))

    def __repr__(self) -> str:
        return f"LayerColumns({len(self)} layers, {len(self.bits)} choices)"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_layers(cls, layers: Sequence[Any]) -> "LayerColumns | None":
        """Columns of ``layers`` when every layer is the plain form (name, params, macs on every layer or on
        none, choices of bits and loss only), else None."""
        plain = Choice(bits=1, loss=0.0)
        with_macs = {layer.macs is not None for layer in layers}
        if len(with_macs) > 1:
            return None
        for layer in layers:
            if (layer.shape is not None or layer.min_bits is not None
                    or layer.max_bits is not None or layer.fixed_bits is not None):
                return None
            for c in layer.choices:
                if (c.size_bits, c.bops, c.rank, c.terms, c.loss_stderr, c.rounding, c.group_size) != (
                        plain.size_bits, plain.bops, plain.rank, plain.terms, plain.loss_stderr, plain.rounding,
                        plain.group_size):
                    return None
        counts = np.fromiter((len(layer.choices) for layer in layers), np.int64, len(layers))
        start = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        total = int(start[-1])
        bits = np.fromiter((c.bits for layer in layers for c in layer.choices), np.int64, total)
        loss = np.fromiter((c.loss for layer in layers for c in layer.choices), np.float64, total)
        params = np.fromiter((layer.params for layer in layers), np.int64, len(layers))
        macs = np.fromiter((layer.macs for layer in layers), np.int64, len(layers)) if True in with_macs else None
        return cls([layer.name for layer in layers], params, start, bits, loss, macs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready column form (see the module docstring)."""
        start = self.start.tolist()
        bits, loss = self.bits.tolist(), self.loss.tolist()
        out = {"name": list(self.names), "params": self.params.tolist(),
               "bits": [bits[a:b] for a, b in zip(start[:-1], start[1:])],
               "loss": [loss[a:b] for a, b in zip(start[:-1], start[1:])]}
        if self.macs is not None:
            out["macs"] = self.macs.tolist()
        return out


def columns_from_dict(data: Any) -> LayerColumns:
    """Validate the column form of ``layers`` and build it; errors name the field (``layers.bits[3][1]``)."""
    names, params, bits_rows, loss_rows, macs = _columns(data)
    _check_names(names)
    counts = _check_rows(params, macs, bits_rows, loss_rows)
    start = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    total = int(start[-1])
    bits = _fast_array(bits_rows, int, np.int64, total)
    loss = _fast_array(loss_rows, float, np.float64, total)
    if bits is not None and loss is not None and bits.min() >= 1 and bits.max() <= MAX_BITS \
            and np.isfinite(loss).all():
        return _built(names, params, macs, start, bits, loss, counts)
    bits, loss = _checked_choices(bits_rows, loss_rows, start)
    return _built(names, params, macs, start, bits, loss, counts)


def _columns(data: Any) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any] | None]:
    """The columns (names, params, bits, loss, macs or None), each a list with one entry per layer."""
    if not isinstance(data, dict):
        raise ProblemError("expected a list of layers or an object of columns", field="layers")
    unknown = [k for k in data if k not in COLUMN_KEYS + OPTIONAL_KEYS]
    if unknown:
        raise ProblemError(f"unknown column {unknown[0]!r}; the column form has {list(COLUMN_KEYS)} and optionally "
                           f"{list(OPTIONAL_KEYS)} (layers with other fields use the list form)", field="layers")
    for key in COLUMN_KEYS:
        if key not in data:
            raise ProblemError(f"missing required column {key!r}", field="layers")
        if not isinstance(data[key], list):
            raise ProblemError(f"expected a list [...], got {type(data[key]).__name__}", field=f"layers.{key}")
    names, params, bits_rows, loss_rows = (data[k] for k in COLUMN_KEYS)
    n = len(names)
    if n == 0:
        raise ProblemError("a problem needs at least one layer", field="layers")
    macs = data.get("macs")
    if macs is not None and not isinstance(macs, list):
        raise ProblemError(f"expected a list [...], got {type(macs).__name__}", field="layers.macs")
    for key in ("params", "bits", "loss") + (("macs",) if macs is not None else ()):
        if len(data[key]) != n:
            raise ProblemError(f"{len(data[key])} entries for {n} names; every column has one per layer",
                               field=f"layers.{key}")
    return names, params, bits_rows, loss_rows, macs


def _check_names(names: list[Any]) -> None:
    """Every name a non-empty string of at most 1024 characters, no two alike."""
    n = len(names)
    if not all(type(v) is str for v in names) or not all(v.strip() and len(v) <= 1024 for v in names):
        i = next(i for i, v in enumerate(names) if type(v) is not str or not v.strip() or len(v) > 1024)
        check_name(names[i], f"layers.name[{i}]")
        raise ProblemError(f"expected a non-empty string, got {names[i]!r:.40}", field=f"layers.name[{i}]")
    if len(set(names)) != n:
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                raise ProblemError(f"duplicate layer name {name!r} (also layers.name[{seen[name]}]); layer names "
                                   "must be unique", field=f"layers.name[{i}]")
            seen[name] = i


def _check_rows(params: list[Any], macs: list[Any] | None, bits_rows: list[Any], loss_rows: list[Any]) -> np.ndarray:
    """Integer params and macs; one list of choices per layer, as many losses as bit-widths, at least one: the
    number of choices per layer (n,)."""
    n = len(params)
    _check_ints(params, lambda i: f"layers.params[{i}]", 1, MAX_EXACT_INT)
    if macs is not None:
        _check_ints(macs, lambda i: f"layers.macs[{i}]", 0, MAX_EXACT_INT)
    for key, rows in (("bits", bits_rows), ("loss", loss_rows)):
        if not all(type(r) is list for r in rows):
            i = next(i for i, r in enumerate(rows) if type(r) is not list)
            raise ProblemError(f"expected a list of this layer's choices, got {type(rows[i]).__name__}",
                               field=f"layers.{key}[{i}]")
    counts = np.fromiter(map(len, bits_rows), np.int64, n)
    if counts.min() == 0:
        i = int(np.argmin(counts))
        raise ProblemError("a layer needs at least one choice, e.g. [8] with loss [0.0]", field=f"layers.bits[{i}]")
    loss_counts = np.fromiter(map(len, loss_rows), np.int64, n)
    if not np.array_equal(counts, loss_counts):
        i = int(np.flatnonzero(counts != loss_counts)[0])
        raise ProblemError(f"{loss_counts[i]} losses for {counts[i]} bit-widths", field=f"layers.loss[{i}]")
    return counts


def _checked_choices(bits_rows: list[Any], loss_rows: list[Any], start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat bit-widths and losses, checked on the Python values so that a bad entry is named
    (``layers.loss[i][j]``); reached only when the fast conversion found something wrong."""
    flat_bits = list(itertools.chain.from_iterable(bits_rows))
    flat_loss = list(itertools.chain.from_iterable(loss_rows))

    def where(k: int) -> tuple[int, int]:
        i = int(np.searchsorted(start, k, side="right") - 1)
        return i, k - int(start[i])

    _check_ints(flat_bits, lambda k: "layers.bits[{}][{}]".format(*where(k)), 1, MAX_BITS)
    types = set(map(type, flat_loss))
    if not types <= {float, int}:
        k = next(k for k, v in enumerate(flat_loss) if type(v) not in (float, int))
        raise ProblemError(f"expected a number, got {type(flat_loss[k]).__name__} {flat_loss[k]!r:.40}",
                           field="layers.loss[{}][{}]".format(*where(k)))
    try:
        loss = np.array(flat_loss, dtype=np.float64)
    except OverflowError:
        k = next(k for k, v in enumerate(flat_loss) if type(v) is int and abs(v) > 1e308)
        raise ProblemError(f"expected a finite number, got an integer with {len(str(flat_loss[k]))} digits",
                           field="layers.loss[{}][{}]".format(*where(k))) from None
    bad = np.flatnonzero(~np.isfinite(loss))
    if bad.size:
        raise ProblemError(f"expected a finite number, got {flat_loss[int(bad[0])]!r}",
                           field="layers.loss[{}][{}]".format(*where(int(bad[0]))))
    return np.array(flat_bits, dtype=np.int64), loss




def _fast_array(rows: list[list[Any]], kind: type, dtype: type, total: int) -> np.ndarray | None:
    """The flat array of ``rows`` straight from the JSON values (no flat Python list: 128 MB at 10^6 layers),
    or None when some value is not a plain ``kind`` (ints also pass as floats) or does not fit ``dtype``."""
    allowed = {int} if kind is int else {float, int}
    if not set(map(type, itertools.chain.from_iterable(rows))) <= allowed:
        return None
    try:
        return np.fromiter(itertools.chain.from_iterable(rows), dtype, total)
    except OverflowError:
        return None


def _built(names: list[str], params: list[Any], macs: list[Any] | None, start: np.ndarray, bits: np.ndarray,
           loss: np.ndarray, counts: np.ndarray) -> LayerColumns:
    """LayerColumns from checked values, refusing a bit-width repeated within a layer."""
    n = len(names)

    def where(k: int) -> tuple[int, int]:
        i = int(np.searchsorted(start, k, side="right") - 1)
        return i, k - int(start[i])

    layer_of = np.repeat(np.arange(n), counts)
    order = np.lexsort((bits, layer_of))
    same = (layer_of[order][1:] == layer_of[order][:-1]) & (bits[order][1:] == bits[order][:-1])
    if same.any():
        k = int(max(order[1:][same][0], order[:-1][same][0]))
        i, j = where(k)
        raise ProblemError(f"duplicate choice {bits[k]}b in this layer; remove one", field=f"layers.bits[{i}][{j}]")
    return LayerColumns(names, np.array(params, dtype=np.int64), start, bits, loss,
                        None if macs is None else np.array(macs, dtype=np.int64))


def _check_ints(values: list[Any], field: Any, low: int, high: int) -> None:
    """Every value a plain int in [low, high] (bools and floats refused, as the row form's check_int does for
    anything but integral floats); ``field(k)`` names entry k in the error."""
    if all(type(v) is int for v in values):
        if values and (min(values) < low or max(values) > high):
            k = next(k for k, v in enumerate(values) if not low <= v <= high)
            bound = f">= {low}" if values[k] < low else f"<= {high}"
            raise ProblemError(f"expected an integer {bound}, got {str(values[k])[:40]}", field=field(k))
        return
    for k, v in enumerate(values):
        if type(v) is not int and not (type(v) is float and math.isfinite(v) and v == int(v)):
            raise ProblemError(f"expected an integer, got {type(v).__name__} {v!r:.40}", field=field(k))
    _check_ints([int(v) for v in values], field, low, high)

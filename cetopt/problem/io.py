"""The ``cetopt.problem/1`` JSON file format: load with field-naming validation, save atomically.

Minimal form::

    {"format": "cetopt.problem/1", "name": "tiny",
     "layers": [{"name": "conv1", "params": 864,
                 "choices": [{"bits": 2, "loss": 0.31}, {"bits": 4, "loss": 0.02}, {"bits": 8, "loss": 0.0}]}],
     "budget": {"avg_bits": 4.0}}

The full field list is in docs/problem-format.md and the JSON schema (``cetopt schema``).
Saving is deterministic: the same problem always gives the same bytes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from cetopt._atomic import atomic_write_text
from cetopt.errors import ProblemError
from cetopt.inputs import MAX_BYTES, NonFiniteLiteral, check_tree, parse_json, read_regular_file  # noqa: F401
from cetopt.problem._checks import MAX_BITS, at
from cetopt.problem.columns import LayerColumns, columns_from_dict
from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, Interaction, Layer

FORMAT = "cetopt.problem/1"
MAX_FILE_BYTES = MAX_BYTES["problem file"]  # CETOPT_MAX_INPUT_BYTES overrides it (cetopt.inputs)

_TOP_KEYS = ("format", "name", "description", "minimize", "budget", "activation_bits", "layers", "ties",
             "interactions", "edges", "metadata")
_LAYER_KEYS = ("name", "params", "macs", "shape", "min_bits", "max_bits", "fixed_bits", "choices")
_CHOICE_KEYS = ("bits", "loss", "size_bits", "bops", "rank", "terms", "loss_stderr", "rounding", "group_size")
_BUDGET_KEYS = ("avg_bits", "size_bits", "size_bytes", "ratio", "bops", "max_loss")
_INTERACTION_KEYS = ("layers", "loss")
_EDGE_KEYS = ("from", "to", "kind")


def _object(value: Any, field: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProblemError(f"expected an object {{...}}, got {type(value).__name__}", field=field or None)
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise ProblemError(f"unknown key {unknown[0]!r}; allowed keys are {list(keys)}", field=field or None)
    for key in required:
        if key not in value:
            raise ProblemError(f"missing required key {key!r}", field=field or None)
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProblemError(f"expected a list [...], got {type(value).__name__}", field=field)
    return value


_FAST_KEYS = frozenset(("bits", "loss"))
_FAST_DEFAULTS = {"size_bits": None, "bops": None, "rank": None, "terms": 1, "loss_stderr": None, "rounding": None,
                  "group_size": None}


def _choice_from_dict(data: Any) -> Choice:
    # the common {"bits": int, "loss": float} entry is checked inline (the same checks Choice runs): at
    # 100,000 layers x 8 choices the per-field validators were most of a solve's wall time
    if type(data) is dict and data.keys() == _FAST_KEYS:
        bits, loss = data["bits"], data["loss"]
        if type(bits) is int and 1 <= bits <= MAX_BITS and type(loss) is float and math.isfinite(loss):
            choice = object.__new__(Choice)
            choice.__dict__.update(bits=bits, loss=loss, **_FAST_DEFAULTS)
            return choice
    obj = _object(data, "", _CHOICE_KEYS, ("bits", "loss"))
    return Choice(**{k: obj[k] for k in _CHOICE_KEYS if k in obj})


def _layer_from_dict(data: Any) -> Layer:
    obj = _object(data, "", _LAYER_KEYS, ("name", "params", "choices"))
    choices = []
    for j, item in enumerate(_list(obj["choices"], "choices")):
        try:  # try/except, not `with at(...)`: a context manager per choice costs more than the check
            choices.append(_choice_from_dict(item))
        except ProblemError as err:
            raise err.under(f"choices[{j}]") from None
    kwargs = {k: obj[k] for k in _LAYER_KEYS if k in obj and k != "choices"}
    if "shape" in kwargs and isinstance(kwargs["shape"], list):
        kwargs["shape"] = tuple(kwargs["shape"])
    return Layer(choices=tuple(choices), **kwargs)


ROWS_AS_COLUMNS = 10_000  # list-form files of at least this many plain layers are held as columns too
_PLAIN_LAYER = (frozenset(("name", "params", "choices")), frozenset(("name", "params", "choices", "macs")))


def _rows_as_columns(items: list[Any]) -> LayerColumns | None:
    """The list form's layers as columns when every layer is plain (name, params, macs on all or none, choices
    of bits and loss) and valid; None otherwise, and the layer-by-layer path then names any bad field."""
    with_macs = type(items[0]) is dict and "macs" in items[0]
    names, params, macs, bits, loss = [], [], [], [], []
    for item in items:
        if type(item) is not dict or item.keys() != _PLAIN_LAYER[with_macs] or type(item["choices"]) is not list:
            return None
        choices = item["choices"]
        if not all(type(c) is dict and c.keys() == _FAST_KEYS for c in choices):
            return None
        names.append(item["name"])
        params.append(item["params"])
        if with_macs:
            macs.append(item["macs"])
        bits.append([c["bits"] for c in choices])
        loss.append([c["loss"] for c in choices])
    columns = {"name": names, "params": params, "bits": bits, "loss": loss}
    if with_macs:
        columns["macs"] = macs
    try:
        return columns_from_dict(columns)
    except ProblemError:
        return None


def problem_from_dict(data: Any) -> AllocationProblem:
    """Build and validate a problem from parsed JSON; errors name the offending field."""
    obj = _object(data, "", _TOP_KEYS, ("format", "name", "layers"))
    if obj["format"] != FORMAT:
        raise ProblemError(f"unsupported format {obj['format']!r:.60}; this cetopt reads {FORMAT!r}",
                           field="format")
    layers: Any = []
    if isinstance(obj["layers"], dict):  # the column form (cetopt.problem.columns): arrays, not 10^6 objects
        layers = columns_from_dict(obj["layers"])
    elif isinstance(obj["layers"], list) and len(obj["layers"]) >= ROWS_AS_COLUMNS:
        layers = _rows_as_columns(obj["layers"]) or []
    for i, item in enumerate(_list(obj["layers"], "layers") if isinstance(layers, list) else ()):
        try:
            layers.append(_layer_from_dict(item))
        except ProblemError as err:
            raise err.under(f"layers[{i}]") from None
    with at("budget"):
        budget_obj = _object(obj.get("budget", {}), "", _BUDGET_KEYS)
        budget = Budget(**budget_obj)
    ties = []
    for g, group in enumerate(_list(obj.get("ties", []), "ties")):
        ties.append(tuple(_list(group, f"ties[{g}]")))
    interactions = []
    for i, item in enumerate(_list(obj.get("interactions", []), "interactions")):
        with at(f"interactions[{i}]"):
            term = _object(item, "", _INTERACTION_KEYS, _INTERACTION_KEYS)
            pair = _list(term["layers"], "layers")
            if len(pair) != 2:
                raise ProblemError("expected exactly two layer names", field="layers")
            interactions.append(Interaction(a=pair[0], b=pair[1], loss=_list(term["loss"], "loss")))
    edges = []
    for i, item in enumerate(_list(obj.get("edges", []), "edges")):
        with at(f"edges[{i}]"):
            edge = _object(item, "", _EDGE_KEYS, ("from", "to"))
            edges.append(Edge(src=edge["from"], dst=edge["to"], kind=edge.get("kind", "feeds")))
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ProblemError("expected an object", field="metadata")
    if "description" in obj:
        metadata = {**metadata, "description": obj["description"]}
    return AllocationProblem(
        name=obj["name"], layers=layers if isinstance(layers, LayerColumns) else tuple(layers), budget=budget,
        minimize=obj.get("minimize", "loss"),
        ties=tuple(ties), interactions=tuple(interactions), edges=tuple(edges),
        activation_bits=obj.get("activation_bits", 8), metadata=metadata,
    )


def _clean(value: float) -> float | int:
    """Integral floats print as ints so files stay readable and byte-stable."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def problem_to_dict(problem: AllocationProblem, *, columnar: bool = False) -> dict[str, Any]:
    """The JSON-ready form of ``problem`` (only non-default optional fields are written).

    Args:
        columnar: write the layers as columns (cetopt.problem.columns: loads in a fraction of the time at
            10^5 layers); every layer must then be the plain form (name, params, choices of bits and loss).
    """
    layers: Any = []
    if columnar:
        columns = problem.columns if problem.columns is not None else LayerColumns.from_layers(problem.layers)
        if columns is None:
            raise ProblemError("the column form holds layers of name, params and choices of bits and loss only; "
                               "this problem has other fields (write it without columnar)", field="layers")
        layers = columns.to_dict()
    for layer in problem.layers if not columnar else ():
        entry: dict[str, Any] = {"name": layer.name, "params": layer.params}
        for key in ("macs", "min_bits", "max_bits", "fixed_bits"):
            if getattr(layer, key) is not None:
                entry[key] = getattr(layer, key)
        if layer.shape is not None:
            entry["shape"] = list(layer.shape)
        choices = []
        for choice in layer.choices:
            item: dict[str, Any] = {"bits": choice.bits, "loss": choice.loss}
            for key in ("size_bits", "bops", "rank"):
                if getattr(choice, key) is not None:
                    item[key] = _clean(getattr(choice, key))
            if choice.terms != 1:
                item["terms"] = choice.terms
            if choice.loss_stderr is not None:
                item["loss_stderr"] = choice.loss_stderr
            for key in ("rounding", "group_size"):
                if getattr(choice, key) is not None:
                    item[key] = getattr(choice, key)
            choices.append(item)
        entry["choices"] = choices
        layers.append(entry)
    out: dict[str, Any] = {"format": FORMAT, "name": problem.name, "minimize": problem.minimize.value}
    out["budget"] = {k: _clean(getattr(problem.budget, k)) for k in _BUDGET_KEYS
                     if getattr(problem.budget, k) is not None}
    if problem.activation_bits != 8:
        out["activation_bits"] = problem.activation_bits
    out["layers"] = layers
    if problem.ties:
        out["ties"] = [list(group) for group in problem.ties]
    if problem.interactions:
        out["interactions"] = [{"layers": [t.a, t.b], "loss": [list(r) for r in t.loss]}
                               for t in problem.interactions]
    if problem.edges:
        out["edges"] = [{"from": e.src, "to": e.dst, "kind": e.kind.value} for e in problem.edges]
    if problem.metadata:
        out["metadata"] = dict(problem.metadata)
    return out


def parse_problem_json(text: str | bytes, source: str = "<string>") -> AllocationProblem:
    """Parse JSON text into a validated problem (duplicate keys, over-long integers and deep nesting refused
    with the field named: cetopt.inputs.parse_json)."""
    data = parse_json(text, source, max_depth=None)  # the validators type-check every structured level
    del text  # load_problem passes the file's bytes only here: free them before building (10^6 layers)
    problem = problem_from_dict(data)
    if isinstance(data, dict) and "metadata" in data:  # the one free-form value: depth, NaN / Infinity
        try:
            check_tree(data["metadata"], "metadata")
        except ProblemError as err:
            raise ProblemError(f"{source}: {err.reason}", field=err.field) from None
    return problem


def load_problem(path: str | os.PathLike[str]) -> AllocationProblem:
    """Load and validate a ``cetopt.problem/1`` file (a regular file of at most MAX_FILE_BYTES, or
    CETOPT_MAX_INPUT_BYTES when set)."""
    return parse_problem_json(read_regular_file(path, None, "problem file"), source=str(path))


def dumps_problem(problem: AllocationProblem, *, columnar: bool = False) -> str:
    """Deterministic JSON text of ``problem`` (ends with a newline); ``columnar``: see problem_to_dict."""
    data = problem_to_dict(problem, columnar=columnar)
    if columnar:  # one line per column (indenting 10^6 numbers one per line would triple the file)
        text = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        return text + "\n"
    return json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def save_problem(problem: AllocationProblem, path: str | os.PathLike[str], *, columnar: bool = False) -> Path:
    """Write ``problem`` to ``path`` atomically; returns the path. ``columnar``: see problem_to_dict."""
    return atomic_write_text(path, dumps_problem(problem, columnar=columnar))


"""Compression plans: one full choice per layer (bits, rank, series terms, rounding, quantiser), applied to a
copy of a torch model, exported and imported as JSON (``cetopt.plan/2``; ``cetopt.plan/1`` files still
load; atomic writes).

A plan file::

    {"format": "cetopt.plan/2", "model": "digits-cnn", "problem": "digits-cnn-cet",
     "quantizer": {"symmetric": true, "per_channel": true, "clip": "none", ...},
     "activation": null,
     "layers": {"conv1": {"bits": 4, "rank": null, "terms": 1, "rounding": "nearest"},
                "fc":    {"bits": 8, "rank": 16, "terms": 1, "rounding": "nearest"}},
     "extra": {"solver": "dp", "status": "optimal", ...}}

A layer entry may carry its own ``"quantizer"`` (else the plan's applies). ``rank`` r: the weight is the
truncated-SVD product A B with factors stored at ``bits`` (32 = floating point); ``terms`` K > 1: a series
of K b-bit terms; ``rounding``: "nearest" or "major-axis[-gradient]" (the grid point toward the layer's
flat axes, which needs the layer's curvature). Layers not listed stay in floating point; ``activation``
is reserved (activation quantisation is an option of ``cetopt apply``; ``extra["activation_bits"]`` is the width
the problem's BOPs assumed, ``extra["bops"]`` those BOPs).

Plans come from a solve (:func:`plan_from_result`), ``cetopt solve --out``, the bench, or by hand; the
sizes they report are :mod:`cetopt.quant.pack`'s, the one definition of packed size and ratio.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cetopt._atomic import atomic_write_text
from cetopt.errors import ProblemError
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.quant.rounding.registry import ROUNDINGS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cetopt.problem.model import AllocationProblem
    from cetopt.solvers.result import SolveResult

PLAN_FORMAT = "cetopt.plan/2"
OLD_FORMATS = ("cetopt.plan/1",)
FINGERPRINT_KEYS = ("fingerprint_weights", "fingerprint_layers", "fingerprint_calibration")  # cetopt.fingerprint
FLOAT_BITS = 32  # bits >= 32 on a low-rank choice: factors kept in floating point


@dataclass(frozen=True)
class LayerChoice:
    """How one layer is compressed.

    Attributes:
        bits: bits per stored value (1..16; a low-rank choice may say 32 = floating-point factors).
        rank: truncated-SVD rank r (W ~ A B), or None for the full matrix.
        terms: series-expansion terms K (1 = plain quantisation).
        rounding: a registered rounding (cetopt.quant.rounding: nearest, mse, major-axis, major-axis-gradient,
            adaround, gptq; plain quantisation at >= 2 bits only, except nearest).
        quantizer: the grid, or None for the plan's.
    """

    bits: int
    rank: int | None = None
    terms: int = 1
    rounding: str = "nearest"
    quantizer: QuantizerSpec | None = None

    def __post_init__(self) -> None:
        top = FLOAT_BITS if self.rank is not None else 16
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= top:
            raise ProblemError(f"bits must be an integer in 1..{top}, got {self.bits!r}", field="bits")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ProblemError(f"rank must be a positive integer or null, got {self.rank!r}", field="rank")
        if isinstance(self.terms, bool) or not isinstance(self.terms, int) or not 1 <= self.terms <= 64:
            raise ProblemError(f"terms must be an integer in 1..64, got {self.terms!r}", field="terms")
        if self.rounding not in ROUNDINGS:
            raise ProblemError(f"unknown rounding {self.rounding!r}; use one of {ROUNDINGS}", field="rounding")
        if self.rounding != "nearest" and (self.rank is not None or self.terms > 1 or self.bits < 2):
            raise ProblemError(f"{self.rounding} rounding applies to plain quantisation at >= 2 bits", field="rounding")
        if self.rank is not None and self.terms > 1:
            raise ProblemError("a choice is low-rank or a series, not both", field="terms")
        if self.terms > 1 and self.bits < 2:
            raise ProblemError("series terms need >= 2 bits each", field="bits")

    @property
    def label(self) -> str:
        """``4b``, ``r16@8b``, ``3x4b`` (as cetopt.problem.Choice.label), ``4b/major-axis``."""
        text = f"{self.terms}x{self.bits}b" if self.terms > 1 else f"{self.bits}b"
        text = f"r{self.rank}@{text}" if self.rank is not None else text
        return text if self.rounding == "nearest" else f"{text}/{self.rounding}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bits": self.bits, "rank": self.rank, "terms": self.terms, "rounding": self.rounding}
        if self.quantizer is not None:
            out["quantizer"] = self.quantizer.to_dict()
        return out


def _quantizer_from(data: Any, where: str) -> QuantizerSpec:
    if not isinstance(data, dict):
        raise ProblemError("expected an object of quantizer settings", field=where)
    defaults = asdict(QuantizerSpec())
    for key, value in data.items():
        if key not in defaults:
            raise ProblemError(f"unknown quantizer setting {key!r}; known: {sorted(defaults)}", field=where)
        want = type(defaults[key])
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ProblemError(f"expected {want.__name__}, got {value!r:.40}", field=f"{where}.{key}")
    return QuantizerSpec(**data)


def _choice_from(entry: Any, name: str, version: int) -> LayerChoice:
    where = f"layers.{name}"
    if not isinstance(entry, dict) or not isinstance(entry.get("bits"), int) or isinstance(entry["bits"], bool):
        raise ProblemError("expected {\"bits\": <int>, ...}", field=where)
    known = {"bits"} if version == 1 else {"bits", "rank", "terms", "rounding", "quantizer"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ProblemError(f"unknown key {unknown[0]!r}; a layer entry has {sorted(known)}", field=where)
    quantizer = _quantizer_from(entry["quantizer"], f"{where}.quantizer") if "quantizer" in entry else None
    try:
        return LayerChoice(bits=entry["bits"], rank=entry.get("rank"), terms=entry.get("terms", 1),
                           rounding=entry.get("rounding", "nearest"), quantizer=quantizer)
    except ProblemError as err:
        raise err.under(where) from None


@dataclass(frozen=True)
class Plan:
    """A compression choice per layer and the quantiser that realises it.

    Give either ``bits`` (layer -> bit-width: plain quantisation, rounded to nearest) or ``layers`` (layer ->
    :class:`LayerChoice`); the other is filled in.

    Attributes:
        bits: layer (module path) -> bit-width of its choice.
        quantizer: the default weight quantiser.
        activation: activation quantisation settings (None = weights only).
        model: the model's name or target, for provenance.
        extra: provenance (problem, solver, status, predicted loss, curvature settings, ...).
        layers: layer -> its full choice.
        problem: the name of the problem the plan solves ("" when written by hand).
    """

    bits: Mapping[str, int] = field(default_factory=dict)
    quantizer: QuantizerSpec = QuantizerSpec()
    activation: Mapping[str, Any] | None = None
    model: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[str, LayerChoice] = field(default_factory=dict)
    problem: str = ""

    def __post_init__(self) -> None:
        if self.layers and self.bits and dict(self.bits) != {n: c.bits for n, c in self.layers.items()}:
            raise ProblemError("bits and layers disagree; give one of them", field="bits")
        if not self.layers:
            object.__setattr__(self, "layers", {n: LayerChoice(bits=b) for n, b in self.bits.items()})
        object.__setattr__(self, "bits", {n: c.bits for n, c in self.layers.items()})

    def quantizer_of(self, name: str) -> QuantizerSpec:
        """The grid of layer ``name`` (its own, else the plan's)."""
        return self.layers[name].quantizer or self.quantizer

    @property
    def is_plain(self) -> bool:
        """True when every layer is plain round-to-nearest quantisation (what a cetopt.plan/1 file could hold)."""
        return all(c.rank is None and c.terms == 1 and c.rounding == "nearest" for c in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "model": self.model, "problem": self.problem,
                "quantizer": self.quantizer.to_dict(),
                "activation": dict(self.activation) if self.activation is not None else None,
                "layers": {name: c.to_dict() for name, c in self.layers.items()},
                **({"extra": dict(self.extra)} if self.extra else {})}

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        """A plan from its JSON object (``cetopt.plan/2`` or the older ``cetopt.plan/1``)."""
        if not isinstance(data, dict) or data.get("format") not in (PLAN_FORMAT, *OLD_FORMATS):
            hint = " (a solve result? write plans with `cetopt solve --out`)" if isinstance(data, dict) and \
                "choices" in data and "status" in data else ""
            raise ProblemError(f"not a {PLAN_FORMAT} (or {', '.join(OLD_FORMATS)}) plan{hint}", field="format")
        version = 1 if data["format"] in OLD_FORMATS else 2
        layers = data.get("layers")
        if not isinstance(layers, dict):
            raise ProblemError("expected an object of layer -> {\"bits\": b, ...}", field="layers")
        choices = {str(name): _choice_from(entry, name, version) for name, entry in layers.items()}
        quantizer = _quantizer_from(data.get("quantizer", {}), "quantizer")
        activation, model, extra = data.get("activation"), data.get("model", ""), data.get("extra", {})
        problem = data.get("problem", "")
        if activation is not None and not isinstance(activation, dict):
            raise ProblemError("expected an object or null", field="activation")
        for key, value in (("model", model), ("problem", problem)):
            if not isinstance(value, str):
                raise ProblemError("expected a string", field=key)
        if not isinstance(extra, dict):
            raise ProblemError("expected an object", field="extra")
        return cls(layers=choices, quantizer=quantizer, activation=activation, model=model, extra=extra,
                   problem=problem)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<string>") -> "Plan":
        """Parse a plan from JSON text (errors name the source and the field; duplicate keys, over-long
        integers, deep nesting and NaN / Infinity refused: cetopt.inputs.parse_json)."""
        from cetopt.inputs import parse_json

        return cls.from_dict(parse_json(text, source))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Plan":
        """Read a plan file: a regular file under the plan size cap (cetopt.inputs), parsed and checked."""
        from cetopt.inputs import read_regular_file

        return cls.from_json(read_regular_file(path, None, "plan"), str(path))


def problem_quantizer(problem: "AllocationProblem") -> QuantizerSpec:
    """The quantiser a problem's candidates were built with (metadata "quantizer"; the plain grid when absent)."""
    meta = problem.metadata
    return _quantizer_from(meta["quantizer"], "metadata.quantizer") if "quantizer" in meta else QuantizerSpec()


def plan_from_result(problem: "AllocationProblem", result: "SolveResult", *, model: str | None = None) -> Plan:
    """The plan of a solve: each layer's chosen (bits, rank, terms), the problem's rounding and quantiser.

    Args:
        problem: the problem that was solved (its metadata names the model, rounding and quantiser).
        result: a successful :class:`cetopt.solvers.result.SolveResult` of ``problem``.
        model: the model target to record (default: the problem's metadata "model_target", else "model").

    Raises:
        ProblemError: the result holds no allocation, or does not match the problem's layers.
    """
    if not result.choices:
        raise ProblemError(f"the solve ended {result.status.value} with no allocation: nothing to plan",
                           field="status")
    extra = {"solver": result.solver, "status": result.status.value, "objective": result.objective,
             "predicted_loss": result.loss, "budget_size_bits": result.size_bits, "avg_bits": result.avg_bits}
    return plan_from_choices(problem, result.choices, extra=extra, model=model)


def plan_from_choices(problem: "AllocationProblem", choices: Mapping[str, int], *,
                      extra: Mapping[str, Any] | None = None, model: str | None = None) -> Plan:
    """The plan of an allocation of ``problem`` (layer -> choice index): each layer's (bits, rank, terms), the
    problem's rounding and quantiser, its method and fingerprints, the activation bits its BOPs assume and
    those BOPs (``extra["activation_bits"]``, ``extra["bops"]``), and ``extra`` (e.g. how it was chosen).

    Raises:
        ProblemError: ``choices`` misses a layer of the problem.
    """
    meta = dict(problem.metadata)
    rounding = meta.get("rounding", "nearest")
    quantizer = problem_quantizer(problem)
    layers = {}
    for layer in problem.layers:
        if layer.name not in choices:
            raise ProblemError(f"the result has no choice for layer {layer.name!r}", field="choices")
        c = layer.choices[choices[layer.name]]
        plain = c.rank is None and c.terms == 1 and c.bits >= 2
        chosen = c.rounding if c.rounding is not None else rounding
        if not isinstance(chosen, str):
            raise ProblemError(f"layer {layer.name!r}: choice {c.label} names no rounding and the problem offers "
                               f"several ({chosen})", field="choices")
        grid = quantizer if c.group_size is None or c.group_size == quantizer.group_size else \
            replace(quantizer, group_size=int(c.group_size))
        layers[layer.name] = LayerChoice(bits=int(c.bits), rank=c.rank, terms=int(c.terms),
                                         rounding=chosen if plain else "nearest",
                                         quantizer=None if grid == quantizer else grid)
    from cetopt.problem.evaluate import evaluate

    bops = evaluate(problem, dict(choices)).bops  # None when the problem's layers record no MACs
    extra = {**(extra or {}), "method": meta.get("method"), "activation_bits": problem.activation_bits,
             "bops": bops,
             **({"curvature": meta["curvature"]} if "curvature" in meta else {}),
             **({"objective_kind": meta["objective_kind"]} if isinstance(meta.get("objective_kind"), str) else {}),
             **({"fold_bn": True} if meta.get("fold_bn") else {}),  # apply folds the model's BatchNorms first
             **{k: meta[k] for k in FINGERPRINT_KEYS if isinstance(meta.get(k), str)}}
    if model is None:
        model = str(meta.get("model_target") or meta.get("model", ""))
    return Plan(layers=layers, quantizer=quantizer, model=model,
                problem=problem.name, extra={k: v for k, v in extra.items() if v is not None})

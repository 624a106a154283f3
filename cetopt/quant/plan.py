"""Quantisation plans: apply layer -> bits to a copy of a torch model, report the real packed size, and
export/import the plan as JSON (``cetopt.plan/1``; atomic writes).

A plan file::

    {"format": "cetopt.plan/1", "model": "digits-cnn",
     "quantizer": {"symmetric": true, "per_channel": true, "clip": "none", ...},
     "activation": null,
     "layers": {"conv1": {"bits": 4}, "fc": {"bits": 8}}}

``activation`` is reserved for activation-quantisation settings (weights-only today); layers not listed
stay in floating point.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cetopt._atomic import atomic_write_text
from cetopt.errors import ProblemError
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize, packed_size_bits

PLAN_FORMAT = "cetopt.plan/1"
FP32_BITS = 32


@dataclass(frozen=True)
class Plan:
    """A per-layer bit plan and the quantiser that realises it.

    Attributes:
        bits: layer (module path) -> weight bit-width.
        quantizer: the weight quantiser settings.
        activation: activation quantisation settings (None = weights only).
        model: the model's name, for provenance.
    """

    bits: Mapping[str, int]
    quantizer: QuantizerSpec = QuantizerSpec()
    activation: Mapping[str, Any] | None = None
    model: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "model": self.model, "quantizer": self.quantizer.to_dict(),
                "activation": dict(self.activation) if self.activation is not None else None,
                "layers": {name: {"bits": int(b)} for name, b in self.bits.items()}, **({"extra": dict(self.extra)}
                                                                                      if self.extra else {})}

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ProblemError(f"not a {PLAN_FORMAT} plan", field="format")
        layers = data.get("layers")
        if not isinstance(layers, dict):
            raise ProblemError("expected an object of layer -> {\"bits\": b}", field="layers")
        bits = {}
        for name, entry in layers.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("bits"), int) or isinstance(entry["bits"], bool):
                raise ProblemError("expected {\"bits\": <int>}", field=f"layers.{name}")
            if not 1 <= entry["bits"] <= 16:
                raise ProblemError(f"bits must be in 1..16, got {entry['bits']}", field=f"layers.{name}.bits")
            bits[name] = entry["bits"]
        quantizer = data.get("quantizer", {})
        if not isinstance(quantizer, dict):
            raise ProblemError("expected an object of quantizer settings", field="quantizer")
        defaults = QuantizerSpec().to_dict()
        for key, value in quantizer.items():
            if key not in defaults:
                raise ProblemError(f"unknown quantizer setting {key!r}; known: {sorted(defaults)}", field="quantizer")
            want = type(defaults[key])
            ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ProblemError(f"expected {want.__name__}, got {value!r:.40}", field=f"quantizer.{key}")
        activation, model, extra = data.get("activation"), data.get("model", ""), data.get("extra", {})
        if activation is not None and not isinstance(activation, dict):
            raise ProblemError("expected an object or null", field="activation")
        if not isinstance(model, str):
            raise ProblemError("expected a string", field="model")
        if not isinstance(extra, dict):
            raise ProblemError("expected an object", field="extra")
        return cls(bits=bits, quantizer=QuantizerSpec(**quantizer), activation=activation, model=model, extra=extra)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<string>") -> "Plan":
        """Parse a plan from JSON text (errors name the source and the field)."""
        def reject(name: str) -> None:
            raise ProblemError(f"{name} is not a number", field="layers")

        try:
            data = json.loads(text, parse_constant=reject)
        except RecursionError:
            raise ProblemError(f"{source}: JSON nested too deeply") from None
        except ValueError as err:  # not JSON, or not UTF-8
            raise ProblemError(f"{source}: not a valid plan file ({err})") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Plan":
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            raise ProblemError(f"cannot read plan {path}: {err.strerror}") from None
        return cls.from_json(raw, str(path))


@dataclass(frozen=True)
class AppliedPlan:
    """A quantised copy of a model and its real storage.

    Attributes:
        model: the fake-quantised copy (the original is untouched).
        size_bits: packed weights (values x bits + scales) plus every other parameter at 32 bits.
        fp32_size_bits: the original model at 32 bits per parameter.
        ratio: fp32_size_bits / size_bits.
        weights: layer -> its compressed weight (what :class:`cetopt.measure.Measurer` swaps in).
    """

    model: nn.Module
    size_bits: int
    fp32_size_bits: int
    weights: Mapping[str, "torch.Tensor"] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.fp32_size_bits / self.size_bits


def apply_plan(model: nn.Module, plan: Plan) -> AppliedPlan:
    """A copy of ``model`` with each planned layer's weight replaced by Q_b(W)."""
    modules = dict(model.named_modules())
    missing = [name for name in plan.bits if name not in modules or not hasattr(modules[name], "weight")]
    if missing:
        raise ProblemError(f"plan names layers the model lacks: {missing[:5]}", field="layers")
    quantised = copy.deepcopy(model)
    copies = dict(quantised.named_modules())
    size = 0
    planned_params = set()
    weights = {}
    for name, bits in plan.bits.items():
        weight = copies[name].weight
        weight.data.copy_(fake_quantize(weight.data, bits, plan.quantizer))
        weights[name] = weight.detach()
        size += packed_size_bits(tuple(weight.shape), bits, plan.quantizer)
        planned_params.add(f"{name}.weight")
    total = 0
    for pname, param in quantised.named_parameters():
        total += param.numel()
        if pname not in planned_params:
            size += FP32_BITS * param.numel()
    return AppliedPlan(model=quantised, size_bits=size, fp32_size_bits=FP32_BITS * total, weights=weights)

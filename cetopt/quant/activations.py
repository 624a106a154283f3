"""Static per-tensor activation quantisation: the grid, the range observers, calibration on a torch model and
fake quantisation of layer inputs.

One grid per quantised layer's input (input 0 of a planned Linear / Conv; an Embedding's integer input is
left alone): value = (q - zero_point) x scale, q in [0, 2^b - 1], asymmetric, the calibrated range first
widened to include 0 so zero is exact; scale = (high - low) / (2^b - 1) stored as float32, zero point
round(-low / scale). Observers, per tensor, over every calibration batch:

- ``minmax``: the range [min, max] of every value seen;
- ``percentile``: [p, 100 - p] percentiles (p = :data:`PERCENTILE_TAIL`) of a strided sample of at most
  :data:`SAMPLE` values per batch, pooled over the batches (outliers clipped).

Fake quantisation rounds ``x / scale`` half to even (torch.round), as ONNX's QuantizeLinear does, so a
torch model with :func:`fake_quantised_inputs` computes what the exported QuantizeLinear/DequantizeLinear
pairs compute (cetopt.export.activations reuses these grids), up to values that lie within the two
runtimes' last-bit differences of a step boundary and round to neighbouring steps (docs/artifact-format.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.errors import ProblemError

OBSERVERS = ("minmax", "percentile")
ACTIVATION_BITS = (4, 8)  # the widths below 16 that ONNX's QuantizeLinear has (uint4, uint8)
PERCENTILE_TAIL = 0.01  # percent clipped at each end by the percentile observer
SAMPLE = 200_000  # values per tensor per batch the percentile observer keeps (strided)
FLOAT_ACTIVATION_BITS = 32  # what BOPs count for activations left in float32


@dataclass(frozen=True)
class ActivationGrid:
    """One activation tensor's grid: value = (q - zero_point) x scale, q in [0, 2^bits - 1].

    Attributes:
        tensor: what it quantises (a layer name in an artefact; an ONNX tensor name in an export).
        low, high: the calibrated range, widened to include 0.
        scale: the step, float32-representable.
        zero_point: the code of 0.
        bits: the code width.
    """

    tensor: str
    low: float
    high: float
    scale: float
    zero_point: int
    bits: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in an artefact (without ``tensor``: the key names it)."""
        return {"bits": self.bits, "scale": self.scale, "zero_point": self.zero_point, "low": self.low,
                "high": self.high}

    @classmethod
    def from_dict(cls, tensor: str, data: Any, field: str) -> "ActivationGrid":
        """Parse and check one recorded grid (a damaged entry is a ProblemError naming ``field``)."""
        try:
            bits, zero = int(data["bits"]), int(data["zero_point"])
            scale, low, high = float(data["scale"]), float(data["low"]), float(data["high"])
        except (KeyError, TypeError, ValueError):
            raise ProblemError("expected {bits, scale, zero_point, low, high}", field=field) from None
        ok = bits in ACTIVATION_BITS and 0 <= zero <= 2 ** bits - 1 and np.isfinite([scale, low, high]).all() \
            and scale > 0 and float(np.float32(scale)) == scale and low <= 0 <= high
        if not ok:
            raise ProblemError(f"not a valid grid ({data!r:.120}); the artefact is damaged or was edited", field=field)
        return cls(tensor=tensor, low=low, high=high, scale=scale, zero_point=zero, bits=bits)


def check_activation_options(bits: int, observer: str) -> None:
    """Raise a ProblemError naming the flag for bits other than 4 or 8 or an unknown observer."""
    if observer not in OBSERVERS:
        raise ProblemError(f"unknown observer {observer!r}; use one of {OBSERVERS}", field="--observer")
    if bits not in ACTIVATION_BITS:
        raise ProblemError(f"activation bits must be 4 or 8 (ONNX's QuantizeLinear types), got {bits}",
                           field="--activation-bits")


def grid_for(tensor: str, low: float, high: float, bits: int) -> ActivationGrid:
    """The asymmetric b-bit grid of [low, high] (widened to include 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    levels = 2 ** bits - 1
    scale = (high - low) / levels if high > low else 1.0
    zero = int(np.clip(round(-low / scale), 0, levels))
    return ActivationGrid(tensor=tensor, low=low, high=high, scale=float(np.float32(scale)), zero_point=zero, bits=bits)


class RangeObserver:
    """Accumulates one tensor's values over batches and gives its range by ``observer`` (see the module)."""

    def __init__(self, observer: str) -> None:
        if observer not in OBSERVERS:
            raise ProblemError(f"unknown observer {observer!r}; use one of {OBSERVERS}", field="--observer")
        self.observer = observer
        self.lows: list[float] = []
        self.highs: list[float] = []
        self.samples: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        """One batch's values (any shape)."""
        flat = values.reshape(-1)
        self.lows.append(float(flat.min()))
        self.highs.append(float(flat.max()))
        if self.observer == "percentile":
            self.samples.append(flat[::max(1, flat.size // SAMPLE)].astype(np.float32))

    def range(self, name: str) -> tuple[float, float]:
        """(low, high) over every batch added.

        Raises:
            ProblemError: no batch reached this tensor.
        """
        if not self.lows:
            raise ProblemError(f"calibration never computed activation {name!r}", field="calibration")
        if self.observer == "minmax":
            return min(self.lows), max(self.highs)
        pooled = np.concatenate(self.samples)
        low, high = (float(v) for v in np.percentile(pooled, [PERCENTILE_TAIL, 100 - PERCENTILE_TAIL]))
        return low, high


def quantisable_inputs(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """The layers among ``layers`` whose input 0 is quantised: every one but embeddings (integer indices)."""
    modules = dict(model.named_modules())
    return [n for n in layers if not isinstance(modules[n], (nn.Embedding, nn.EmbeddingBag))]


def calibrate_inputs(model: nn.Module, loss_fn: Any, batches: Sequence[Any], layers: Sequence[str], *,
                     bits: int = 8, observer: str = "minmax") -> dict[str, ActivationGrid]:
    """Run ``loss_fn(model, batch)`` on ``batches`` (no grad) and fit each layer's input 0 a grid.

    Args:
        model: the model to observe (an artefact's unpacked weights: calibration sees the quantised weights).
        layers: module names (cetopt.quant.activations.quantisable_inputs).

    Returns:
        layer -> its grid, in ``layers`` order.

    Raises:
        ProblemError: unknown observer, bits other than 4 or 8, a layer whose input is not floating point or
            that no batch reaches.
    """
    check_activation_options(bits, observer)
    observers = {n: RangeObserver(observer) for n in layers}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise ProblemError(f"layer {name!r} takes no floating-point input to quantise", field="layers")
            observers[name].add(x.detach().float().cpu().numpy())
        return record

    from cetopt._hooks import observe_inputs

    observe_inputs(model, {n: hook(n) for n in layers}, batches, loss_fn)
    return {n: grid_for(n, *observers[n].range(n), bits) for n in layers}


def fake_quantise(x: torch.Tensor, grid: ActivationGrid) -> torch.Tensor:
    """``x`` through the grid: (clamp(round(x / scale) + zero_point, 0, 2^b - 1) - zero_point) x scale, in
    float32 as ONNX's QuantizeLinear / DequantizeLinear compute it, cast back to ``x``'s dtype."""
    scale = torch.tensor(grid.scale, dtype=torch.float32)
    q = x.float() / scale  # one temporary, then in place: a 224x224 batch's activations are large
    q.round_().add_(grid.zero_point).clamp_(0, 2 ** grid.bits - 1).sub_(grid.zero_point).mul_(scale)
    return q.to(x.dtype)


@contextlib.contextmanager
def fake_quantised_inputs(model: nn.Module, grids: Mapping[str, ActivationGrid]) -> Iterator[nn.Module]:
    """``model`` with each grid's layer (module name) fake-quantising its input 0, for the ``with`` block."""
    modules = dict(model.named_modules())
    missing = [n for n in grids if n not in modules]
    if missing:
        raise ProblemError(f"the model has no layer {missing[0]!r} to quantise the input of", field="activations")

    def hook(grid: ActivationGrid):  # type: ignore[no-untyped-def]
        def quantise(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (fake_quantise(args[0], grid), *args[1:])
        return quantise

    handles = [modules[n].register_forward_pre_hook(hook(g)) for n, g in grids.items()]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()

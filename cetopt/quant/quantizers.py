"""Uniform weight quantisers: symmetric or asymmetric, per-tensor, per output channel or per group of inputs,
round to nearest, with an optional MSE-optimal clipping search; any bit-width from 1 to 16. The grid itself and
every other rounding live in cetopt.quant.rounding.

``fake_quantize`` returns Q_b(W) in the weight's dtype; ``quantization_error`` returns d = Q_b(W) - W,
the error vector whose quadratic form the problem builders evaluate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cetopt.errors import ProblemError

SCALE_BITS = 32  # storage per scale (fp32) and per zero-point in the packed size


@dataclass(frozen=True)
class QuantizerSpec:
    """How weights are quantised.

    Attributes:
        symmetric: levels symmetric around 0 (no zero-point) or asymmetric (min..max with a zero-point).
        per_channel: one scale per output channel (dim 0) or one per tensor.
        clip: "none" (range = max |w|, or min..max) or "mse" (search the clipping ratio minimising ||d||^2).
        clip_grid: number of clipping ratios tried in [clip_min, 1] by the "mse" search.
        clip_min: smallest clipping ratio tried.
        group_size: 0 = one scale per output channel (or per tensor); g > 0 = one scale per g consecutive
            inputs of each output channel (the weight as (out, in x kernel); the last group of a row may be
            shorter). Needs ``per_channel``; cetopt.quant.rounding.grid lays the groups out.
    """

    symmetric: bool = True
    per_channel: bool = True
    clip: str = "none"
    clip_grid: int = 20
    clip_min: float = 0.5
    group_size: int = 0

    def __post_init__(self) -> None:
        if self.clip not in ("none", "mse"):
            raise ProblemError(f"clip must be 'none' or 'mse', got {self.clip!r}", field="clip")
        if self.clip_grid < 1 or not 0 < self.clip_min <= 1:
            raise ProblemError("clip_grid must be >= 1 and clip_min in (0, 1]", field="clip_grid")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 0:
            raise ProblemError(f"group_size must be 0 (per channel) or a positive integer, got {self.group_size!r}",
                               field="group_size")
        if self.group_size and not self.per_channel:
            raise ProblemError("group scales split each output channel: set per_channel=True", field="group_size")

    def to_dict(self) -> dict[str, object]:
        """The settings as JSON; ``group_size`` only when set (files written before it existed stay the same)."""
        out = asdict(self)
        if not self.group_size:
            del out["group_size"]
        return out


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ProblemError(f"bits must be an integer in 1..16, got {bits!r}", field="bits")


def channels(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1) if per_channel and weight.dim() > 1 else weight.reshape(1, -1)


def fake_quantize(weight: torch.Tensor, bits: int, spec: QuantizerSpec = QuantizerSpec()) -> torch.Tensor:
    """Q_b(W): the weight rounded to nearest on a ``bits``-bit uniform grid (same shape and dtype): the
    ``nearest`` rounding of cetopt.quant.rounding, whose codes and float32 scales the packed artefact stores."""
    _check_bits(bits)
    from cetopt.quant.rounding import round_weight

    return round_weight("nearest", weight, bits, spec).weight


def quantization_error(weight: torch.Tensor, bits: int, spec: QuantizerSpec = QuantizerSpec()) -> torch.Tensor:
    """d = Q_b(W) - W."""
    return fake_quantize(weight, bits, spec) - weight.detach()


def packed_size_bits(weight_shape: tuple[int, ...], bits: int, spec: QuantizerSpec = QuantizerSpec()) -> int:
    """Real storage of a quantised weight: values x bits + one scale (and zero-point) per channel or group
    (the scale count of cetopt.quant.rounding.grid, which cetopt.quant.pack also uses)."""
    from cetopt.quant.rounding.grid import scale_count

    n = 1
    for s in weight_shape:
        n *= s
    return n * bits + scale_count(tuple(weight_shape), spec) * SCALE_BITS * (1 if spec.symmetric else 2)

"""Uniform weight quantisers: symmetric or asymmetric, per-tensor, per output channel or per group of inputs,
round to nearest, with an optional MSE-optimal clipping search; any bit-width from 1 to 16. The grid itself and
every other rounding live in cetopt.quant.rounding.

``fake_quantize`` returns Q_b(W) in the weight's dtype; ``quantization_error`` returns d = Q_b(W) - W,
the error vector whose quadratic form the problem builders evaluate.
"""

from __future__ import annotations

import torch

from cetopt.errors import ProblemError
from cetopt.quant.spec import SCALE_BITS, QuantizerSpec  # noqa: F401  (re-exported: imported from here)


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

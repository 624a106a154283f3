"""The rounding stage: how a weight's values are placed on the quantiser's grid (one registered file per
rounding: nearest, mse, major-axis, adaround, gptq; cetopt.quant.rounding.registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cetopt.quant.rounding.registry import ROUNDINGS, get_rounding

if TYPE_CHECKING:  # torch loads only when a rounding runs (the CLI lists the names without it)
    import torch

    from cetopt.quant.spec import QuantizerSpec
    from cetopt.quant.rounding.base import Rounded, RoundingContext

__all__ = ["ROUNDINGS", "get_rounding", "round_weight", "rounding_needs"]


def round_weight(name: str, weight: "torch.Tensor", bits: int, spec: "QuantizerSpec | None" = None,
                 context: "RoundingContext | None" = None) -> "Rounded":
    """``weight`` rounded to ``bits`` by the registered rounding ``name`` (see :class:`~.base.Rounding`) on the grid
    of ``spec`` (default: QuantizerSpec(), the plain per-channel symmetric grid)."""
    from cetopt.quant.spec import QuantizerSpec
    from cetopt.quant.rounding.base import RoundingContext

    return get_rounding(name).round(weight, bits, spec or QuantizerSpec(), context or RoundingContext())


def rounding_needs(name: str) -> frozenset[str]:
    """What the rounding ``name`` reads besides the weight ("quadric", "gram")."""
    return get_rounding(name).needs

"""Candidate compression levels of each layer: the compressed weight and the choice it becomes.

A candidate is whatever a compressor produced for a layer (a b-bit quantisation, rounded to nearest or
toward the major axes; later a rank or a series of terms) together with its :class:`Choice` (level and
size). Its error d = W_hat - W is what the cost models score, and its weight is what a plan applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from cetopt.builders.costs import ROUNDINGS
from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.problem.model import Choice
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize



@dataclass(frozen=True)
class LayerCandidates:
    """The candidates of one layer.

    Attributes:
        name: layer (module path).
        original: the layer's weight W (torch layout).
        choices: one Choice per candidate (loss 0: the cost models fill it in).
        weights: the compressed weight W_hat of each candidate, shaped like W.
    """

    name: str
    original: torch.Tensor
    choices: tuple[Choice, ...]
    weights: tuple[torch.Tensor, ...]

    def errors(self) -> list[torch.Tensor]:
        """d = W_hat - W per candidate."""
        return [w - self.original for w in self.weights]


def quantization_candidates(weights: Mapping[str, torch.Tensor], bits: Sequence[int], *,
                            quantizer: QuantizerSpec = QuantizerSpec(), rounding: str = "nearest",
                            quadrics: Mapping[str, LayerQuadric] | None = None) -> list[LayerCandidates]:
    """One candidate per layer and bit-width.

    Args:
        weights: layer name -> weight tensor.
        bits: candidate bit-widths.
        quantizer: the grid (symmetric, per channel, clipping).
        rounding: "nearest"; "major-axis" (minimise the curvature energy outside the major axes, CET's
            rule; needs ``quadrics``, see cetopt.quant.major_axis); "major-axis-gradient" (also the
            first-order term g.d; it overfits the calibration gradient when every layer uses it at once:
            measured in docs/results/cet-checks.md).
    """
    if rounding not in ROUNDINGS:
        raise ProblemError(f"unknown rounding {rounding!r}; use one of {ROUNDINGS}", field="rounding")
    if rounding != "nearest" and quadrics is None:
        raise ProblemError("major-axis rounding needs the layers' quadrics (curvature with k > 0)", field="rounding")
    out = []
    for name, weight in weights.items():
        weight = weight.detach()
        compressed = []
        for b in bits:
            if rounding != "nearest" and b >= 2:
                from cetopt.quant.major_axis import major_axis_round

                compressed.append(major_axis_round(weight, b, quadrics[name], quantizer,
                                                   use_gradient=rounding == "major-axis-gradient").weight)
            else:
                compressed.append(fake_quantize(weight, b, quantizer))
        out.append(LayerCandidates(name=name, original=weight, choices=tuple(Choice(bits=int(b), loss=0.0) for b in bits),
                                   weights=tuple(compressed)))
    return out

"""Candidate compression levels of each layer: the compressed weight and the choice it becomes.

A candidate is whatever a compressor produced for a layer (a b-bit quantisation, rounded to nearest or
toward the major axes; later a rank or a series of terms) together with its :class:`Choice` (level and
size). Its error d = W_hat - W is what the cost models score, and its weight is what a plan applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.problem.model import Choice
from cetopt.quant.compressors import compress
from cetopt.quant.quantizers import QuantizerSpec

ROUNDINGS = ("nearest", "major-axis", "major-axis-gradient")  # how candidates are rounded



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
                compressed.append(compress(weight, Choice(bits=int(b), loss=0.0), quantizer))
        out.append(LayerCandidates(name=name, original=weight, choices=tuple(Choice(bits=int(b), loss=0.0) for b in bits),
                                   weights=tuple(compressed)))
    return out


@dataclass(frozen=True)
class Levels:
    """The compression levels a layer may take (one Choice each).

    Attributes:
        bits: plain quantisation at these bit-widths (rounded as the builder's ``rounding`` says).
        rank_energies: low-rank: the smallest ranks keeping these fractions of ||W||_F^2 (truncated SVD).
        rank_grid: low-rank: ranks as fractions of min(m, n) (e.g. 0.25 = a quarter of full rank).
        rank_bits: storage bits of the low-rank factors (32 = floating point), one choice per rank and value.
        series_bits, series_terms: series expansion: every (bits per term, number of terms) pair.
    """

    bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    rank_energies: tuple[float, ...] = ()
    rank_grid: tuple[float, ...] = ()
    rank_bits: tuple[int, ...] = (32,)
    series_bits: tuple[int, ...] = ()
    series_terms: tuple[int, ...] = field(default=(2,))

    def to_dict(self) -> dict[str, list]:
        return {k: list(getattr(self, k)) for k in ("bits", "rank_energies", "rank_grid", "rank_bits", "series_bits",
                                                     "series_terms")}


def _ranks(weight: torch.Tensor, levels: Levels) -> list[int]:
    from cetopt.quant.lowrank import ranks_for_energy

    full = min(weight.shape[0], weight[0].numel())
    ranks = set(ranks_for_energy(weight, levels.rank_energies)) if levels.rank_energies else set()
    ranks |= {max(1, min(full, round(f * full))) for f in levels.rank_grid}
    # a factorisation only saves storage when r (m + n) < m n
    m, n = weight.shape[0], weight[0].numel()
    return sorted(r for r in ranks if r * (m + n) < m * n)


def level_candidates(weights: Mapping[str, torch.Tensor], levels: Levels, *, quantizer: QuantizerSpec = QuantizerSpec(),
                     rounding: str = "nearest", quadrics: Mapping[str, LayerQuadric] | None = None
                     ) -> list[LayerCandidates]:
    """Candidates mixing quantisation, low-rank factorisation and series expansion (see :class:`Levels`)."""
    plain = {c.name: c for c in quantization_candidates(weights, levels.bits, quantizer=quantizer, rounding=rounding,
                                                        quadrics=quadrics)} if levels.bits else {}
    out = []
    for name, weight in weights.items():
        weight = weight.detach()
        choices = list(plain[name].choices) if name in plain else []
        compressed = list(plain[name].weights) if name in plain else []
        extra = [Choice(bits=int(b), rank=int(r), loss=0.0) for r in _ranks(weight, levels) for b in levels.rank_bits]
        extra += [Choice(bits=int(b), terms=int(k), loss=0.0) for b in levels.series_bits for k in levels.series_terms
                  if k > 1]
        for choice in extra:
            compressed.append(compress(weight, choice, quantizer))
            choices.append(choice)
        if not choices:
            raise ProblemError(f"layer {name!r} has no candidate: the levels allow no quantisation and no rank that "
                               "saves storage", field="levels")
        out.append(LayerCandidates(name=name, original=weight, choices=tuple(choices), weights=tuple(compressed)))
    return out

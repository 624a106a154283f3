"""Candidate compression levels of each layer: the compressed weight and the choice it becomes.

A candidate is whatever a compressor produced for a layer (a b-bit quantisation with a scale per channel or
per group, rounded by a registered rounding of cetopt.quant.rounding; a rank or a series of terms) together with its :class:`Choice` (level and
size). Its error d = W_hat - W is what the cost models score, and its weight is what a plan applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.problem.model import Choice
from cetopt.quant.compressors import compress
from cetopt.quant.quantizers import QuantizerSpec, packed_size_bits
from cetopt.quant.rounding import round_weight
from cetopt.recipe import Levels  # noqa: F401  (its home is the recipe; imported here by older code)
from cetopt.quant.rounding.registry import ROUNDINGS


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


def _roundings(rounding: str | Sequence[str]) -> tuple[str, ...]:
    names = (rounding,) if isinstance(rounding, str) else tuple(dict.fromkeys(rounding))
    if not names:
        raise ProblemError("give at least one rounding", field="rounding")
    for name in names:
        if name not in ROUNDINGS:
            raise ProblemError(f"unknown rounding {name!r}; use one of {ROUNDINGS}", field="rounding")
    return names


def quantization_candidates(weights: Mapping[str, torch.Tensor], bits: Sequence[int], *,
                            quantizer: QuantizerSpec = QuantizerSpec(), rounding: str | Sequence[str] = "nearest",
                            quadrics: Mapping[str, LayerQuadric] | None = None,
                            grams: Mapping[str, torch.Tensor] | None = None,
                            group_sizes: Sequence[int] | None = None) -> list[LayerCandidates]:
    """One candidate per layer, bit-width, group size and rounding, each rounded by its registered rounding
    (cetopt.quant.rounding): the weight a plan applies is exactly the one priced.

    Args:
        weights: layer name -> weight tensor.
        bits: candidate bit-widths (1 bit is always rounded to nearest).
        quantizer: the grid (symmetric, per channel, clipping, group size).
        rounding: a registered rounding ("nearest", "mse", "major-axis", "major-axis-gradient", "adaround",
            "gptq") or several (joint allocation: each becomes its own candidate, recorded in its Choice).
        quadrics: layer -> LayerQuadric, for roundings that need the loss quadric (major-axis).
        grams: layer -> (groups, p, p) layer-input Gram matrix, for roundings that need it (adaround, gptq).
        group_sizes: several scale layouts (0 = per channel, g = a scale per g inputs) as candidates of their
            own, recorded in each Choice with its packed size (codes + scales); None: the quantiser's alone (with
            its packed size when it has group scales).
    """
    from cetopt.quant.rounding import get_rounding
    from cetopt.quant.rounding.base import GRAM, QUADRIC, RoundingContext

    names = _roundings(rounding)
    joint = len(names) > 1
    for name in names:
        needs = get_rounding(name).needs
        if QUADRIC in needs and quadrics is None:
            raise ProblemError(f"{name} rounding needs the layers' quadrics (curvature with k > 0)", field="rounding")
        if GRAM in needs and grams is None:
            raise ProblemError(f"{name} rounding needs the layers' input Gram matrices", field="rounding")
    layouts = (quantizer.group_size,) if group_sizes is None else tuple(dict.fromkeys(int(g) for g in group_sizes))
    out = []
    for name, weight in weights.items():
        weight = weight.detach()
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=(grams or {}).get(name))
        compressed, choices = [], []
        for b in bits:
            for group in layouts:
                spec = replace(quantizer, group_size=group)
                # group scales cost up to a bit per weight: such candidates carry their packed size (codes + scales)
                sized = group_sizes is not None or quantizer.group_size > 0
                size = float(packed_size_bits(tuple(weight.shape), int(b), spec)) if sized else None
                for r in (names if b >= 2 else ("nearest",)):
                    choice = Choice(bits=int(b), loss=0.0, size_bits=size, rounding=r if joint else None,
                                    group_size=group if group_sizes is not None else None)
                    if choice.level in {c.level for c in choices}:
                        continue
                    compressed.append(round_weight(r, weight, int(b), spec, context).weight)
                    choices.append(choice)
        out.append(LayerCandidates(name=name, original=weight, choices=tuple(choices), weights=tuple(compressed)))
    return out


def _ranks(weight: torch.Tensor, levels: Levels) -> list[int]:
    from cetopt.quant.lowrank import ranks_for_energy

    full = min(weight.shape[0], weight[0].numel())
    ranks = set(ranks_for_energy(weight, levels.rank_energies)) if levels.rank_energies else set()
    ranks |= {max(1, min(full, round(f * full))) for f in levels.rank_grid}
    # a factorisation only saves storage when r (m + n) < m n
    m, n = weight.shape[0], weight[0].numel()
    return sorted(r for r in ranks if r * (m + n) < m * n)


def level_candidates(weights: Mapping[str, torch.Tensor], levels: Levels, *, quantizer: QuantizerSpec = QuantizerSpec(),
                     rounding: str | Sequence[str] = "nearest", quadrics: Mapping[str, LayerQuadric] | None = None,
                     grams: Mapping[str, torch.Tensor] | None = None) -> list[LayerCandidates]:
    """Candidates mixing quantisation, low-rank factorisation and series expansion (see :class:`Levels`)."""
    plain = {c.name: c for c in quantization_candidates(weights, levels.bits, quantizer=quantizer, rounding=rounding,
                                                        quadrics=quadrics, grams=grams)} if levels.bits else {}
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

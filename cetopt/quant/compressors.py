"""Compressors: how one compression level (a :class:`cetopt.problem.model.Choice`) turns a weight into its
compressed weight, and what it costs in packed bits. The same registered compressor builds the candidates
the cost models score and applies a solved plan, so a plan is applied exactly as it was scored.

Adding a compressor is one class plus one ``register`` line below: ``applies(choice)`` says which choices it
handles (the first registered compressor that applies wins, most specific first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from cetopt.errors import ProblemError
from cetopt.problem.model import Choice
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize, packed_size_bits


class Compressor(ABC):
    """One family of compression levels (uniform quantisation, low-rank factors, series of terms)."""

    name: ClassVar[str]

    @abstractmethod
    def applies(self, choice: Choice) -> bool:
        """Whether this compressor realises ``choice``."""

    @abstractmethod
    def compress(self, weight: torch.Tensor, choice: Choice, spec: QuantizerSpec) -> torch.Tensor:
        """The compressed weight W_hat, shaped and typed like ``weight``."""

    @abstractmethod
    def packed_size_bits(self, shape: tuple[int, ...], choice: Choice, spec: QuantizerSpec) -> int:
        """Storage of the compressed weight in bits (values, scales, factors), for a weight of ``shape``."""


class UniformQuantizer(Compressor):
    """Q_b(W): uniform per-channel (or per-tensor) quantisation, round to nearest (cetopt.quant.quantizers)."""

    name = "quantize"

    def applies(self, choice: Choice) -> bool:
        return choice.rank is None and choice.terms == 1

    def compress(self, weight: torch.Tensor, choice: Choice, spec: QuantizerSpec) -> torch.Tensor:
        return fake_quantize(weight.detach(), choice.bits, spec)

    def packed_size_bits(self, shape: tuple[int, ...], choice: Choice, spec: QuantizerSpec) -> int:
        return packed_size_bits(shape, choice.bits, spec)


class LowRankFactors(Compressor):
    """W ~ A B at rank r, factors at ``bits`` (32: floating point), cetopt.quant.lowrank."""

    name = "lowrank"

    def applies(self, choice: Choice) -> bool:
        return choice.rank is not None and choice.terms == 1

    def compress(self, weight: torch.Tensor, choice: Choice, spec: QuantizerSpec) -> torch.Tensor:
        from cetopt.quant.lowrank import low_rank

        return low_rank(weight, int(choice.rank), bits=choice.bits, spec=spec).weight  # type: ignore[arg-type]

    def packed_size_bits(self, shape: tuple[int, ...], choice: Choice, spec: QuantizerSpec) -> int:
        from cetopt.quant.lowrank import FLOAT_BITS
        from cetopt.quant.quantizers import SCALE_BITS

        m = shape[0]
        n = 1
        for s in shape[1:]:
            n *= s
        r = int(choice.rank)  # type: ignore[arg-type]
        if choice.bits >= FLOAT_BITS:
            return r * (m + n) * FLOAT_BITS
        return r * (m + n) * choice.bits + (m + r) * SCALE_BITS


class SeriesTerms(Compressor):
    """W ~ sum_k Q_b(R_k), K terms of b bits (FP=xINT's expansion), cetopt.quant.series."""

    name = "series"

    def applies(self, choice: Choice) -> bool:
        return choice.rank is None and choice.terms > 1

    def compress(self, weight: torch.Tensor, choice: Choice, spec: QuantizerSpec) -> torch.Tensor:
        from cetopt.quant.series import series_expand

        return series_expand(weight, choice.bits, choice.terms, spec).weight

    def packed_size_bits(self, shape: tuple[int, ...], choice: Choice, spec: QuantizerSpec) -> int:
        return choice.terms * packed_size_bits(shape, choice.bits, spec)


_REGISTRY: list[Compressor] = []


def register(compressor: Compressor, *, first: bool = False) -> None:
    """Add a compressor (``first``: consulted before the built-in ones)."""
    _REGISTRY.insert(0, compressor) if first else _REGISTRY.append(compressor)


def compressor_for(choice: Choice) -> Compressor:
    """The registered compressor that realises ``choice``."""
    for compressor in _REGISTRY:
        if compressor.applies(choice):
            return compressor
    raise ProblemError(f"no registered compressor realises {choice.label}", field="choice")


def compress(weight: torch.Tensor, choice: Choice, spec: QuantizerSpec = QuantizerSpec()) -> torch.Tensor:
    """``choice`` applied to ``weight`` by its registered compressor."""
    return compressor_for(choice).compress(weight, choice, spec)


register(UniformQuantizer())
register(LowRankFactors())
register(SeriesTerms())

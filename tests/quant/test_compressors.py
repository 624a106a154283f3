"""Every registered compressor realises its choices exactly as the underlying transforms do, with the packed
size they report (checked against cetopt.quant.lowrank / series / quantizers, computed independently)."""

from __future__ import annotations

import pytest
import torch

from cetopt.errors import ProblemError
from cetopt.problem.model import Choice
from cetopt.quant.compressors import _REGISTRY, compress, compressor_for
from cetopt.quant.lowrank import low_rank
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize, packed_size_bits
from cetopt.quant.series import series_expand

CHOICES = [Choice(bits=3, loss=0.0), Choice(bits=8, rank=2, loss=0.0), Choice(bits=32, rank=3, loss=0.0),
           Choice(bits=2, terms=3, loss=0.0)]


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.label)
def test_compressors_match_the_transforms_and_their_sizes(choice: Choice) -> None:
    weight = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))
    spec = QuantizerSpec()
    if choice.rank is not None:
        want = low_rank(weight, choice.rank, bits=choice.bits, spec=spec)
    elif choice.terms > 1:
        want = series_expand(weight, choice.bits, choice.terms, spec)
    else:
        want = None
    got = compress(weight, choice, spec)
    size = compressor_for(choice).packed_size_bits(tuple(weight.shape), choice, spec)
    if want is None:
        assert torch.equal(got, fake_quantize(weight, choice.bits, spec))
        assert size == packed_size_bits(tuple(weight.shape), choice.bits, spec)
    else:
        assert torch.allclose(got, want.weight) and size == want.size_bits


def test_every_choice_kind_has_exactly_one_compressor() -> None:
    for choice in CHOICES:
        assert sum(c.applies(choice) for c in _REGISTRY) == 1, choice.label
    with pytest.raises(ProblemError):
        compressor_for(Choice(bits=2, rank=2, terms=2, loss=0.0))

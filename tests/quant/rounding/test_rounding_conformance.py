"""Every registered rounding (cetopt.quant.rounding.registry) against the same contract: codes inside the grid's
range, the weight exactly the dequantised codes (and exactly what the packed artefact decodes to), shape and dtype
kept, deterministic, and never worse than nearest on the full-range grid in the rounding's own objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.quant.pack import compress_layer, layer_packed_bits
from cetopt.quant.plan import LayerChoice
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.quant.rounding import ROUNDINGS, get_rounding, round_weight
from cetopt.quant.rounding.base import GRAM, QUADRIC, RoundingContext
from cetopt.quant.rounding.grid import scale_count

SPECS = {"per-channel": QuantizerSpec(), "asymmetric": QuantizerSpec(symmetric=False),
         "group-4": QuantizerSpec(group_size=4), "group-5-mse": QuantizerSpec(group_size=5, clip="mse")}


def _context(out: int, inp: int, seed: int) -> RoundingContext:
    """A random indefinite-free quadric (6 eigenpairs) and an ill-conditioned Gram matrix of a Linear(inp, out)."""
    rng = np.random.default_rng(seed)
    n = out * inp
    u = np.linalg.qr(rng.standard_normal((n, 6)))[0].T
    quadric = LayerQuadric(name="w", gradient=0.05 * rng.standard_normal(n), trace=3.0 * n,
                           eigenvalues=np.array([0.1, 0.5, 5.0, 20.0, 60.0, 200.0]), eigenvectors=u)
    x = torch.from_numpy(rng.standard_normal((200, inp)) @ rng.standard_normal((inp, inp)))
    return RoundingContext(quadric=quadric, gram=(x.T @ x / 200)[None])


@pytest.mark.parametrize("name", ROUNDINGS)
@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_every_rounding_keeps_the_contract(name: str, spec_name: str, bits: int) -> None:
    spec = SPECS[spec_name]
    w = torch.randn(6, 13, generator=torch.Generator().manual_seed(bits))
    context = _context(6, 13, bits)
    rounding = get_rounding(name)
    out = rounding.round(w, bits, spec, context)
    assert out.weight.shape == w.shape and out.weight.dtype == w.dtype
    assert out.codes.dtype == torch.int64 and out.codes.shape == (6, 13)
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) <= out.grid.top <= 2 ** bits - 1
    assert out.grid.scale.numel() == scale_count(tuple(w.shape), spec)
    assert torch.equal(out.weight, out.grid.values(out.codes).reshape(w.shape).to(w.dtype))
    again = rounding.round(w, bits, spec, context)
    assert torch.equal(again.codes, out.codes) and torch.equal(again.weight, out.weight)
    # the packed artefact stores exactly these codes: apply gives the priced weight bit for bit
    packed = compress_layer(w, LayerChoice(bits, rounding=name), spec, context=context, name="w")
    assert torch.equal(packed.weight.to(w.dtype), out.weight)
    assert packed.stored_bits == layer_packed_bits(tuple(w.shape), LayerChoice(bits), spec)
    claim = rounding.objective((out.weight.double() - w.double()).reshape(6, 13), context)
    if claim is not None:  # no worse than nearest on the full-range grid of the same layout
        plain = round_weight("nearest", w, bits, QuantizerSpec(spec.symmetric, group_size=spec.group_size))
        reference = rounding.objective((plain.weight.double() - w.double()).reshape(6, 13), context)
        assert claim <= reference + 1e-9 * abs(reference)


@pytest.mark.parametrize("name", ROUNDINGS)
def test_missing_context_is_named(name: str) -> None:
    rounding = get_rounding(name)
    w = torch.randn(4, 5)
    if not rounding.needs:
        assert round_weight(name, w, 3).weight.shape == w.shape
        return
    with pytest.raises(ProblemError) as err:
        round_weight(name, w, 3)
    assert err.value.field == "rounding"
    assert rounding.needs <= {QUADRIC, GRAM}


def test_unknown_rounding_is_named() -> None:
    with pytest.raises(ProblemError, match="unknown rounding 'floor'") as err:
        get_rounding("floor")
    assert err.value.field == "rounding"

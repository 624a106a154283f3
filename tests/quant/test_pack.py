"""Packed storage: bit-packed codes round-trip, every choice decodes to what the compressors of
cetopt.quant compute on their own, and the stored bytes are exactly the packed size predicted from shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.quant.lowrank import low_rank
from cetopt.quant.rounding.major_axis import major_axis_round
from cetopt.quant.pack import (PackedSize, compress_layer, encode, decode, layer_packed_bits, model_packed_size,
                               pack_codes, problem_packed_size, unpack_codes, unpack_layer)
from cetopt.quant.plan import LayerChoice, Plan
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize
from cetopt.quant.series import series_expand

SPECS = [QuantizerSpec(), QuantizerSpec(symmetric=False), QuantizerSpec(per_channel=False), QuantizerSpec(clip="mse")]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 16).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(0, 2 ** b - 1), max_size=300))))
def test_codes_round_trip(case: tuple[int, list[int]]) -> None:
    bits, values = case
    codes = np.array(values, dtype=np.int64)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-len(values) * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, len(values)), codes)


def _reference(w: torch.Tensor, choice: LayerChoice, spec: QuantizerSpec) -> torch.Tensor:
    """What cetopt.quant's own compressors give (the independent truth)."""
    if choice.rank is not None:
        return low_rank(w, choice.rank, bits=choice.bits, spec=spec).weight.double()
    if choice.terms > 1:
        return series_expand(w, choice.bits, choice.terms, spec).weight.double()
    return fake_quantize(w, choice.bits, spec).double()


CHOICES = [LayerChoice(1), LayerChoice(2), LayerChoice(3), LayerChoice(4), LayerChoice(8), LayerChoice(16),
           LayerChoice(3, terms=3), LayerChoice(4, rank=3), LayerChoice(32, rank=5)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"sym{int(s.symmetric)}-pc{int(s.per_channel)}-{s.clip}")
@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.label)
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (10, 7)])
def test_every_choice_packs_to_its_predicted_size_and_decodes(spec: QuantizerSpec, choice: LayerChoice,
                                                               shape: tuple[int, ...]) -> None:
    if choice.bits == 1 and not spec.symmetric:
        pytest.skip("1-bit quantisation is symmetric (sign x magnitude)")
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    packed = compress_layer(w, choice, spec, name="layer")
    assert packed.stored_bits == layer_packed_bits(shape, choice, spec)
    reference = _reference(w, choice, spec)
    # float32 scales only: far below one grid step (4e-5 of the range at 16 bits, 0.14 at 4 bits)
    assert (packed.weight - reference).abs().max().item() <= 1e-6 * w.abs().max().item()
    assert torch.equal(unpack_layer(packed.tensors, packed.layout, "layer"), packed.weight)


def test_major_axis_weights_pack_on_their_grid() -> None:
    rng = np.random.default_rng(0)
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(2))
    u = np.linalg.qr(rng.standard_normal((60, 4)))[0].T
    quadric = LayerQuadric(name="l", gradient=np.zeros(60), trace=76.6, eigenvalues=np.array([1.0, 5.0, 20.0, 50.0]),
                           eigenvectors=u)
    choice = LayerChoice(3, rounding="major-axis")
    packed = compress_layer(w, choice, QuantizerSpec(), quadric=quadric, name="l")
    truth = major_axis_round(w, 3, quadric, QuantizerSpec()).weight.double()
    assert (packed.weight - truth).abs().max().item() < 1e-6
    with pytest.raises(ProblemError, match="curvature"):
        compress_layer(w, choice, QuantizerSpec(), name="l")


def test_a_weight_off_the_grid_is_refused() -> None:
    w = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ProblemError, match="not on a 2-bit"):
        encode(w, 2, QuantizerSpec(), "x")
    q = fake_quantize(w, 5, QuantizerSpec())
    tensors, layout = encode(q, 5, QuantizerSpec(), "x")
    assert torch.allclose(decode(tensors, layout, "x"), q, atol=1e-12)


def test_model_size_counts_every_other_parameter_at_32_bits() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3, bias=False))
    plan = Plan(layers={"0": LayerChoice(4), "2": LayerChoice(8, rank=2)})
    size = model_packed_size(model, plan)
    by_hand_0 = 8 * -(-20 * 4 // 8) + 4 * 32           # codes in whole bytes + one fp32 scale per output row
    by_hand_2 = (8 * 6 + 3 * 32) + (8 * 8 + 2 * 32)    # A (3x2) and B (2x4) at 8 bits, scales per row
    assert size.layers == {"0": by_hand_0, "2": by_hand_2}
    assert size.other_bits == 32 * 4 and size.fp32_bits == 32 * (20 + 4 + 12)
    assert size.ratio == pytest.approx(size.fp32_bits / (by_hand_0 + by_hand_2 + 128))


def test_problem_size_agrees_with_the_model_size() -> None:
    from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    layers = tuple(Layer(name=n, params=m.weight.numel(), shape=(m.weight.shape[0], m.weight[0].numel()),
                         choices=(Choice(bits=4, loss=0.0),)) for n, m in (("0", model[0]), ("2", model[2])))
    problem = AllocationProblem(name="p", layers=layers, budget=Budget(avg_bits=4),
                                metadata={"other_params": 4 + 2, "buffer_bits": 0})
    plan = Plan(bits={"0": 4, "2": 4})
    assert problem_packed_size(problem, plan) == model_packed_size(model, plan)
    assert problem_packed_size(problem.with_changes(metadata={}), plan) is None
    assert isinstance(model_packed_size(model, plan), PackedSize)

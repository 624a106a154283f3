"""Quantisers against hand-computed values and invariants; plans apply to a copy and round-trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.apply import apply_plan
from cetopt.quant.plan import Plan
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize, packed_size_bits, quantization_error


def test_symmetric_per_channel_by_hand() -> None:
    w = torch.tensor([[0.9, -0.3, 0.1], [2.0, 1.0, -0.4]])
    q = fake_quantize(w, 3)  # levels -3..3; scales 0.3 and 2/3
    torch.testing.assert_close(q, torch.tensor([[0.9, -0.3, 0.0], [2.0, 2 / 3 * 2, -2 / 3 * 1]]))


def test_asymmetric_per_tensor_by_hand() -> None:
    w = torch.tensor([[0.0, 0.25, 1.0]])
    q = fake_quantize(w, 2, QuantizerSpec(symmetric=False, per_channel=False))  # 4 levels over [0, 1]
    torch.testing.assert_close(q, torch.tensor([[0.0, 1 / 3, 1.0]]))


@given(st.integers(2, 16), st.booleans(), st.booleans(), st.integers(0, 1000))
def test_error_is_at_most_half_a_step(bits: int, symmetric: bool, per_channel: bool, seed: int) -> None:
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    spec = QuantizerSpec(symmetric=symmetric, per_channel=per_channel)
    err = quantization_error(w, bits, spec).abs()
    rows = w if per_channel else w.reshape(1, -1)
    if symmetric:
        step = rows.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
    else:
        step = (rows.amax(dim=1, keepdim=True) - rows.amin(dim=1, keepdim=True)) / (2 ** bits - 1)
    # the grid is the stored one: float32 scale and offset, so half a step holds up to float32 rounding
    assert bool((err.reshape(rows.shape) <= step / 2 + 1e-6 * rows.abs().amax()).all())


def test_mse_clipping_never_loses_to_round_to_nearest() -> None:
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)) ** 3  # heavy tails: clipping helps
    for bits in (2, 3, 4):
        plain = quantization_error(w, bits).pow(2).sum()
        clipped = quantization_error(w, bits, QuantizerSpec(clip="mse")).pow(2).sum()
        assert clipped <= plain
    assert quantization_error(w, 3, QuantizerSpec(clip="mse")).pow(2).sum() < 0.97 * quantization_error(w, 3).pow(2).sum()


def test_bad_bits_are_refused() -> None:
    for bits in (0, 17, 2.5, True):
        with pytest.raises(ProblemError, match="bits"):
            fake_quantize(torch.ones(2, 2), bits)  # type: ignore[arg-type]


def test_plan_applies_to_a_copy_reports_packed_size_and_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    before = [p.clone() for p in model.parameters()]
    plan = Plan(bits={"0": 4, "2": 8}, model="toy")
    applied = apply_plan(model, plan)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not torch.equal(applied.model[0].weight, model[0].weight)
    # 32 weights at 4 bits + 4 scales, 8 weights at 8 bits + 2 scales, 6 biases at fp32
    assert applied.size_bits == 32 * 4 + 4 * 32 + 8 * 8 + 2 * 32 + 6 * 32
    assert applied.size_bits == packed_size_bits((4, 8), 4) + packed_size_bits((2, 4), 8) + 6 * 32
    assert applied.ratio == pytest.approx(46 * 32 / applied.size_bits)
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    with pytest.raises(ProblemError, match="lacks"):
        apply_plan(model, Plan(bits={"nope": 4}))

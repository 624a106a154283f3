"""cetopt.quant.activations: the calibrated grids are the min/max (or percentiles) an independent hook sees,
fake quantisation is the QuantizeLinear/DequantizeLinear formula computed in numpy, and the hooks leave
the model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.activations import (ActivationGrid, calibrate_inputs, fake_quantise, fake_quantised_inputs,
                                      grid_for, quantisable_inputs)


def model_and_batches() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    g = torch.Generator().manual_seed(1)
    return model, [(torch.randn(20, 6, generator=g) * 3,) for _ in range(3)]


def test_minmax_grids_are_the_ranges_an_independent_hook_sees() -> None:
    model, batches = model_and_batches()
    grids = calibrate_inputs(model, lambda m, b: m(b[0]).sum(), batches, ["0", "2"], bits=8)
    with torch.no_grad():
        hidden = [torch.relu(model[0](b[0])) for b in batches]
    first = torch.cat([b[0] for b in batches])
    for name, values in (("0", first), ("2", torch.cat(hidden))):
        low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        grid = grids[name]
        assert (grid.low, grid.high) == (low, high)
        assert grid.scale == pytest.approx((high - low) / 255, rel=1e-7)
        assert grid.zero_point == round(-low / ((high - low) / 255))
    assert grids["2"].zero_point == 0  # a ReLU output: low is 0


def test_percentile_is_inside_minmax_and_options_are_named() -> None:
    model, batches = model_and_batches()
    loss = lambda m, b: m(b[0]).sum()  # noqa: E731
    mm = calibrate_inputs(model, loss, batches, ["0"], bits=8)
    pc = calibrate_inputs(model, loss, batches, ["0"], bits=8, observer="percentile")
    assert mm["0"].low <= pc["0"].low <= pc["0"].high <= mm["0"].high
    with pytest.raises(ProblemError, match="observer"):
        calibrate_inputs(model, loss, batches, ["0"], observer="mse")
    with pytest.raises(ProblemError, match="4 or 8"):
        calibrate_inputs(model, loss, batches, ["0"], bits=6)
    emb = nn.Sequential(nn.Embedding(4, 2), nn.Linear(2, 2))
    assert quantisable_inputs(emb, ["0", "1"]) == ["1"]


@settings(max_examples=40, deadline=None)
@given(low=st.floats(-50, 0), width=st.floats(1e-3, 100), bits=st.sampled_from([4, 8]), seed=st.integers(0, 99))
def test_fake_quantise_is_quantize_then_dequantize_in_numpy(low: float, width: float, bits: int, seed: int) -> None:
    grid = grid_for("x", low, low + width, bits)
    x = torch.randn(200, generator=torch.Generator().manual_seed(seed)) * width
    scale = np.float32(grid.scale)
    q = np.clip(np.round(x.numpy() / scale) + grid.zero_point, 0, 2 ** bits - 1)  # np.round: half to even
    want = ((q - grid.zero_point) * scale).astype(np.float32)
    got = fake_quantise(x, grid).numpy()
    assert np.array_equal(got, want)
    assert len(np.unique(got)) <= 2 ** bits and 0.0 in fake_quantise(torch.zeros(1), grid).numpy()


def test_hooks_are_removed_and_recorded_grids_round_trip() -> None:
    model, batches = model_and_batches()
    grids = calibrate_inputs(model, lambda m, b: m(b[0]).sum(), batches, ["0", "2"], bits=4)
    x = batches[0][0]
    with torch.no_grad():
        plain = model(x)
        with fake_quantised_inputs(model, grids):
            quantised = model(x)
            want = model[2](fake_quantise(torch.relu(model[0](fake_quantise(x, grids["0"]))), grids["2"]))
        after = model(x)
    assert torch.equal(quantised, want) and torch.equal(after, plain) and not torch.equal(quantised, plain)
    for name, grid in grids.items():
        assert ActivationGrid.from_dict(name, grid.to_dict(), "g") == grid
    with pytest.raises(ProblemError, match="activations.x"):
        ActivationGrid.from_dict("x", {**grids["0"].to_dict(), "zero_point": 99}, "activations.x")

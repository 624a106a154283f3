"""Greedy AdaRound against independent truth: the reconstruction error recomputed from the layer's own forward
pass, every single flip of the result tried by brute force (a 1-flip local optimum), nearest never beaten the
wrong way, and every weight within one grid step of nearest."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.adaround import layer_inputs
from cetopt.quant.rounding.adaround import adaround_layer, adaround_weights
from cetopt.quant.quantizers import QuantizerSpec, channels, fake_quantize


def _error(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean over samples/positions of the summed squared output difference, from the forward pass itself."""
    if isinstance(module, nn.Linear):
        diff = nn.functional.linear(x, weight) - nn.functional.linear(x, module.weight.detach())
        return float(diff.pow(2).sum(-1).mean())
    f = (lambda w: nn.functional.conv2d(x, w, None, module.stride, module.padding, module.dilation, module.groups))
    return float((f(weight) - f(module.weight.detach())).pow(2).sum(1).mean())


def _neighbours(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Floor and ceiling on the symmetric per-channel grid, its scale max|w| / levels rounded to float32 (stored)."""
    rows = channels(weight.detach(), True)
    levels = 2 ** (bits - 1) - 1
    scale = (rows.abs().amax(dim=1, keepdim=True) / levels).float().double()
    floor = torch.clamp(torch.floor(rows / scale), -levels, levels)
    return (floor * scale).reshape(weight.shape), (torch.clamp(floor + 1, -levels, levels) * scale).reshape(weight.shape)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(2, 7), st.sampled_from([2, 3, 4]), st.integers(0, 10_000))
def test_linear_local_optimum_and_exact_error(out: int, inp: int, bits: int, seed: int) -> None:
    torch.manual_seed(seed)
    layer = nn.Linear(inp, out).double()
    x = torch.randn(40, inp, dtype=torch.float64) @ torch.randn(inp, inp, dtype=torch.float64)
    result = adaround_layer(layer, x, bits)
    nearest = fake_quantize(layer.weight.detach(), bits)
    assert result.error_nearest == pytest.approx(_error(layer, x, nearest), rel=1e-9, abs=1e-12)
    assert result.error == pytest.approx(_error(layer, x, result.weight), rel=1e-9, abs=1e-12)
    assert result.error <= result.error_nearest * (1 + 1e-12)
    low, high = _neighbours(layer.weight, bits)
    on_grid = torch.isclose(result.weight, low) | torch.isclose(result.weight, high)
    assert bool(on_grid.all())                                      # floor or ceiling: within one grid step
    for i, j in itertools.product(range(out), range(inp)):          # no single flip improves
        flipped = result.weight.clone()
        flipped[i, j] = high[i, j] if torch.isclose(result.weight[i, j], low[i, j]) else low[i, j]
        assert _error(layer, x, flipped) >= result.error - 1e-9 * max(result.error, 1e-12)


def test_reaches_brute_force_optimum_where_nearest_is_far_from_it() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 1).double()
    x = torch.randn(64, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    result = adaround_layer(layer, x, 3)
    low, high = _neighbours(layer.weight, 3)
    best = min(_error(layer, x, torch.where(torch.tensor(mask, dtype=torch.bool)[None], high, low))
               for mask in itertools.product([False, True], repeat=6))
    assert result.error_nearest > 2 * best                          # the case is not trivial
    assert result.error == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_conv_error_matches_the_convolution(groups: int) -> None:
    torch.manual_seed(groups)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=groups).double()
    x = torch.randn(6, 8, 9, 9, dtype=torch.float64)
    result = adaround_layer(conv, x, 3)
    assert result.error_nearest == pytest.approx(_error(conv, x, fake_quantize(conv.weight.detach(), 3)), rel=1e-9)
    assert result.error == pytest.approx(_error(conv, x, result.weight), rel=1e-9)
    assert result.error < result.error_nearest and result.flips > 0


def test_conv1d_error_matches_the_convolution() -> None:
    torch.manual_seed(3)
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2).double()
    x = torch.randn(5, 4, 17, dtype=torch.float64)
    f = (lambda w: nn.functional.conv1d(x, w, None, 2, 1, 1, 2))
    result = adaround_layer(conv, x, 3)
    exact = (lambda w: float((f(w) - f(conv.weight.detach())).pow(2).sum(1).mean()))
    assert result.error_nearest == pytest.approx(exact(fake_quantize(conv.weight.detach(), 3)), rel=1e-9)
    assert result.error == pytest.approx(exact(result.weight), rel=1e-9)
    assert result.error < result.error_nearest


def test_inputs_are_captured_and_bad_settings_named() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    batches = [torch.randn(7, 5), torch.randn(3, 5)]
    inputs = layer_inputs(model, ["0", "2"], lambda m, b: m(b), batches)
    assert inputs["0"].shape == (10, 5) and torch.equal(inputs["0"], torch.cat(batches))
    assert torch.allclose(inputs["2"], torch.relu(model[0](torch.cat(batches))).detach())
    results = adaround_weights(model, {"0": 3, "2": 4}, inputs)
    assert set(results) == {"0", "2"}
    with pytest.raises(ProblemError) as err:
        adaround_layer(nn.Conv2d(2, 3, 3), torch.randn(2, 2, 5, 5), 3, QuantizerSpec(per_channel=False))
    assert err.value.field == "quantizer"
    with pytest.raises(ProblemError) as err:
        layer_inputs(model, ["nosuch"], lambda m, b: m(b), batches)
    assert err.value.field == "layers"

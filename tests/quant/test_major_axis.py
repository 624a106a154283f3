"""Major-axis rounding: stays on the quantiser's grid, within one step of nearest, never worse on its model,
and (checked against exhaustive search on tiny layers) close to the best rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.quant.rounding.major_axis import major_axis_round
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize


def quadric_for(n: int, seed: int, indefinite: bool = False) -> tuple[LayerQuadric, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    h = a @ a.T / n + (-0.3 if indefinite else 0.01) * np.eye(n)
    values, vectors = np.linalg.eigh(h)
    g = 0.05 * rng.normal(size=n)
    return LayerQuadric("w", g, float(np.trace(h)), values, vectors.T), h


@settings(deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([2, 3, 4]), st.booleans(), st.booleans())
def test_on_grid_within_one_step_and_never_worse(seed: int, bits: int, indefinite: bool, use_gradient: bool) -> None:
    quadric, h = quadric_for(12, seed, indefinite)
    w = torch.from_numpy(np.random.default_rng(seed + 1).normal(size=(3, 4)))
    out = major_axis_round(w, bits, quadric, ratios=(1.0,), use_gradient=use_gradient)
    assert out.model_major <= out.model_rtn + 1e-12
    rtn = fake_quantize(w, bits)
    scale = (w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)).float().double()  # stored as float32
    codes = out.weight / scale
    assert torch.allclose(codes, torch.round(codes), atol=1e-9)  # on the grid
    assert ((out.weight - rtn).abs() <= scale * (1 + 1e-9)).all()  # one step at most
    d = (out.weight - w).numpy().ravel()
    linear = quadric.gradient @ d if use_gradient else 0.0
    assert out.model_major == pytest.approx(linear + 0.5 * d @ h @ d, rel=1e-9, abs=1e-12)


def test_close_to_exhaustive_search_on_a_tiny_layer() -> None:
    quadric, h = quadric_for(8, 3)
    w = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 8)))
    out = major_axis_round(w, 2, quadric, ratios=(1.0,), use_gradient=True)
    scale = float(w.abs().max().float())  # 2 bits symmetric: levels -1, 0, 1; the scale is stored as float32
    lo = np.clip(np.floor(w.numpy().ravel() / scale), -1, 1)
    best = np.inf
    for choice in itertools.product([0, 1], repeat=8):
        q = np.clip(lo + np.array(choice), -1, 1) * scale
        d = q - w.numpy().ravel()
        best = min(best, quadric.gradient @ d + 0.5 * d @ h @ d)
    assert out.model_major <= out.model_rtn
    assert out.model_major - best <= 0.05 * (out.model_rtn - best) + 1e-12  # most of the way to the optimum


def test_refuses_what_it_cannot_do() -> None:
    quadric, _ = quadric_for(4, 0)
    with pytest.raises(ProblemError, match="bits"):
        major_axis_round(torch.zeros(2, 2), 1, quadric)
    with pytest.raises(ProblemError, match="quadric"):
        major_axis_round(torch.zeros(3, 3), 4, quadric)
    out = major_axis_round(torch.ones(2, 2), 4, quadric, spec=QuantizerSpec(symmetric=False))
    assert out.weight.shape == (2, 2)


def test_stopping_early_keeps_the_search_path_and_only_gives_up_its_tail() -> None:
    """``stall`` ends the same greedy path sooner: never below the full search's value, never above RTN's."""
    rng = np.random.default_rng(5)
    n, m = 4000, 6
    u = np.linalg.qr(rng.normal(size=(n, m)))[0].T
    quadric = LayerQuadric("w", 1e-3 * rng.normal(size=n), 50.0, np.array([-0.2, 0.0, 0.5, 2.0, 8.0, 30.0]), u)
    w = torch.from_numpy(0.05 * rng.normal(size=(40, 100)))
    full = major_axis_round(w, 3, quadric, ratios=(1.0,), stall=0.0)
    default = major_axis_round(w, 3, quadric, ratios=(1.0,))
    early = major_axis_round(w, 3, quadric, ratios=(1.0,), stall=0.2)  # stops on a plateau of this layer
    assert full.model_major <= early.model_major <= early.model_rtn
    assert early.flips < full.flips
    # the default tolerance rides out that plateau (the model value passes through zero on the way: an
    # indefinite quadric)
    assert default.model_major == pytest.approx(full.model_major, rel=1e-9) and full.model_major < 0


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 10_000), st.sampled_from([2, 3, 4]), st.booleans())
def test_all_ratios_at_once_equal_one_ratio_at_a_time(seed: int, bits: int, use_gradient: bool) -> None:
    """The batched search (every clipping ratio in one pass, cetopt.quant.rounding.major_axis) reaches the model
    value of the original one-ratio-at-a-time search (flip_search, the old _greedy_flips) on small layers."""
    from cetopt.quant.major_axis import RATIOS, flip_search
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.quant.rounding.grid import make_grid

    quadric, _ = quadric_for(24, seed, True)
    w = torch.from_numpy(np.random.default_rng(seed + 2).normal(size=(4, 6)))
    out = major_axis_round(w, bits, quadric, use_gradient=use_gradient)
    best = out.model_rtn
    for ratio in RATIOS:
        grid = make_grid(w, bits, QuantizerSpec(), ratio)
        floor, ceil = grid.floor_ceil(w)
        start = grid.nearest(w)
        other = torch.where(start == floor, ceil, floor)
        _, value = flip_search((grid.values(start) - w).reshape(-1).numpy(), (grid.values(other) - w).reshape(-1).numpy(),
                               quadric, use_gradient)
        best = min(best, value)
    assert out.model_major == pytest.approx(best, rel=1e-9, abs=1e-12)

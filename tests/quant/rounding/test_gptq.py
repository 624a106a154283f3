"""GPTQ against an independent reference: the OBQ recursion written out column by column with an explicit inverse
(Frantar et al. 2022, eq. 2-3: the error of column j spread over the remaining columns by H^-1 restricted to
them, which is then updated by removing j), on Linear and grouped convolution layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.quant.adaround import layer_grams
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.quant.rounding import round_weight
from cetopt.quant.rounding.base import RoundingContext, gram_energy
from cetopt.quant.rounding.gptq import DAMPING, gptq_codes
from cetopt.quant.rounding.grid import make_grid


def obq_reference(rows: np.ndarray, scale: np.ndarray, zero: np.ndarray, top: int, h: np.ndarray) -> np.ndarray:
    """Codes by the OBQ recursion: quantise column j, w_rest -= (w_j - q_j) / [H^-1]_jj [H^-1]_{j,rest},
    then H^-1 <- H^-1 - [H^-1]_{:,j} [H^-1]_{j,:} / [H^-1]_jj (column j removed)."""
    w = rows.copy()
    p = w.shape[1]
    damped = h + DAMPING * np.mean(np.diag(h)) * np.eye(p)
    hinv = np.linalg.inv(damped)
    codes = np.zeros_like(w, dtype=np.int64)
    for j in range(p):
        u = np.clip(np.round(w[:, j] / scale[:, j]) + zero[:, j], 0, top)
        codes[:, j] = u
        q = (u - zero[:, j]) * scale[:, j]
        err = (w[:, j] - q) / hinv[j, j]
        w[:, j + 1:] -= np.outer(err, hinv[j, j + 1:])
        hinv = hinv - np.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
    return codes


@pytest.mark.parametrize("bits,block", [(2, 128), (3, 4), (4, 7)])
def test_blocked_cholesky_gptq_equals_the_obq_recursion(bits: int, block: int) -> None:
    rng = np.random.default_rng(bits)
    rows = torch.from_numpy(rng.standard_normal((5, 16)))
    x = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    h = x.T @ x / 300
    grid = make_grid(rows, bits, QuantizerSpec())
    codes, _ = gptq_codes(rows, grid, torch.from_numpy(h)[None], block=block)
    scale, zero = (t.numpy() for t in grid.columns())
    assert np.array_equal(codes.numpy(), obq_reference(rows.numpy(), scale, zero, grid.top, h))


@pytest.mark.parametrize("groups", [1, 4])
def test_conv_gram_and_error_match_the_convolution(groups: int) -> None:
    torch.manual_seed(groups)
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=groups).double()
    x = torch.randn(6, 4, 7, 7, dtype=torch.float64)
    gram = layer_grams(conv, [""], lambda m, b: m(b), [x[:4], x[4:]])[""]
    out = round_weight("gptq", conv.weight.detach(), 3, QuantizerSpec(), RoundingContext(gram=gram))
    f = (lambda w: nn.functional.conv2d(x, w, None, 1, 1, 1, groups))
    truth = float((f(out.weight) - f(conv.weight.detach())).pow(2).sum(1).mean())
    d = (out.weight - conv.weight.detach()).reshape(8, -1)
    assert gram_energy(d, gram) == pytest.approx(truth, rel=1e-9)
    nearest = round_weight("nearest", conv.weight.detach(), 3)
    assert truth <= float((f(nearest.weight) - f(conv.weight.detach())).pow(2).sum(1).mean()) * (1 + 1e-12)

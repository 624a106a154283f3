"""GPTQ / OBQ rounding (Frantar et al. 2022, arXiv 2210.17323, Algorithm 1): the columns of the weight (as
(out, in x kernel)) are quantised one after another, and each column's rounding error is fed back into the
columns not yet quantised through the inverse of the layer-input Gram matrix H = X'X / N + lambda I, so the
output reconstruction error sum_r d_r' H d_r (the Gauss-Newton block of the layer with the identity as the loss
curvature in the outputs) is kept small. Uses the Cholesky factor of H^-1 and lazy batch updates (blocks of
``BLOCK`` columns, the rest of the matrix updated once per block); grouped convolutions (depthwise) run all
groups at once with one H per group.

Differences from the paper, said plainly: the grid (its scales, per channel or per group) is fixed from the
original weights before the search ("static groups"), so the codes and scales stored are exactly those
searched; columns are taken in their natural order (no act-order); the FP32 model's inputs are used for every
layer (no sequential re-capture). Damping lambda = ``DAMPING`` x mean diag(H) (x 10 until H is positive
definite, logged). The result is compared with nearest on the same grid in the reconstruction error and the
lower one is kept (recorded as info["chose"], logged at INFO when it is nearest).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch

from cetopt.errors import ProblemError
from cetopt.quant.spec import QuantizerSpec
from cetopt.quant.rounding.base import GRAM, Rounding, RoundingContext, check_gram, gram_energy
from cetopt.quant.rounding.grid import Grid, spec_grid

log = logging.getLogger(__name__)
BLOCK = 128
DAMPING = 0.01
MAX_DAMPING_TRIES = 8


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block, the caller's setting restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def inverse_cholesky(gram: torch.Tensor, damping: float = DAMPING) -> tuple[torch.Tensor, float]:
    """(upper Cholesky factor U of (G + lambda I)^-1, U'U = (G + lambda I)^-1, batched over groups; lambda as a
    fraction of mean diag(G)). Columns with no input (G_jj = 0) get G_jj = 1 (their error reaches no output)."""
    h = gram.double().clone()
    diag = torch.diagonal(h, dim1=1, dim2=2)
    dead = diag == 0
    diag += dead.double()
    mean = diag.mean(dim=1)
    eye = torch.eye(h.shape[1], dtype=h.dtype)
    for attempt in range(MAX_DAMPING_TRIES):
        factor, info = torch.linalg.cholesky_ex(h + (damping * mean)[:, None, None] * eye)
        if not bool(info.any()):
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if not bool(info.any()):
                return upper, damping
        log.info("GPTQ: H + %.0e mean diag(H) I is not positive definite; damping x 10", damping)
        damping *= 10
    raise ProblemError("the layer-input Gram matrix stays singular after damping; check the calibration inputs",
                       field="gram")


def gptq_codes(rows: torch.Tensor, grid: Grid, gram: torch.Tensor, *, block: int = BLOCK,
               damping: float = DAMPING) -> tuple[torch.Tensor, float]:
    """(codes (rows, cols) int64, damping used) of GPTQ on ``grid`` for ``rows`` (rows, p) float64 and ``gram``
    (groups, p, p); the rows of group k are rows k R/groups .. (k + 1) R/groups - 1 (torch's conv layout)."""
    groups, p = gram.shape[0], rows.shape[1]
    shape = (groups, rows.shape[0] // groups, p)
    upper, damping = inverse_cholesky(gram, damping)
    scale, zero = (t.reshape(shape) for t in grid.columns())
    offset = None if grid.offset is None else \
        grid.offset.repeat_interleave(grid.group, dim=1)[:, :p].reshape(shape)
    w = rows.double().reshape(shape).clone()
    codes = torch.empty(shape, dtype=torch.long)
    for i1 in range(0, p, block):
        i2 = min(i1 + block, p)
        w1 = w[:, :, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = upper[:, i1:i2, i1:i2]
        with _one_thread():  # per-column ops are tiny: extra threads only add latency (10x on a loaded 2-core box)
            for i in range(i2 - i1):
                j = i1 + i
                u = torch.clamp(torch.round(w1[:, :, i] / scale[:, :, j]) + zero[:, :, j], 0, grid.top)
                codes[:, :, j] = u.long()
                q = u * scale[:, :, j] + offset[:, :, j] if offset is not None else (u - zero[:, :, j]) * scale[:, :, j]
                err = (w1[:, :, i] - q) / u1[:, i, i][:, None]
                w1[:, :, i:] -= err[:, :, None] * u1[:, None, i, i:]
                err1[:, :, i] = err
        w[:, :, i2:] -= err1 @ upper[:, i1:i2, i2:]
    return codes.reshape(rows.shape), damping


class Gptq(Rounding):
    name = "gptq"
    needs = frozenset({GRAM})

    def codes(self, rows: torch.Tensor, bits: int, spec: QuantizerSpec, context: RoundingContext
              ) -> tuple[torch.Tensor, Grid, dict[str, Any]]:
        gram = context.gram.double()  # type: ignore[union-attr]
        check_gram(gram, rows)
        grid = spec_grid(rows, bits, spec)
        codes, damping = gptq_codes(rows, grid, gram)
        nearest = grid.nearest(rows)
        rows = rows.double()
        error = gram_energy(grid.values(codes) - rows, gram)
        error_nearest = gram_energy(grid.values(nearest) - rows, gram)
        if error_nearest < error:
            log.info("GPTQ: nearest has the lower reconstruction error (%.3g < %.3g); keeping nearest",
                     error_nearest, error)
            return nearest, grid, {"chose": "nearest", "damping": damping, "error": error_nearest,
                                   "error_nearest": error_nearest}
        return codes, grid, {"chose": "gptq", "damping": damping, "error": error, "error_nearest": error_nearest}

    def objective(self, d: torch.Tensor, context: RoundingContext) -> float | None:
        return gram_energy(d, context.gram.double())  # type: ignore[union-attr]

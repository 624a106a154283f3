"""Low-rank factorisation of a layer's weight: W (m, n) ~ A B with A (m, r), B (r, n) from the truncated
SVD (Linear as is; Conv reshaped to (out_channels, in_channels x kernel area)). The factors can be stored
in floating point (32 bits) or quantised per row at b bits ("rank r stored at b bits"). Storage:
r (m + n) values at the stored precision (plus one 32-bit scale per factor row when quantised).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from cetopt.errors import ProblemError
from cetopt.quant.quantizers import SCALE_BITS, QuantizerSpec, fake_quantize

FLOAT_BITS = 32


@dataclass(frozen=True)
class LowRank:
    """A rank-r approximation of one weight.

    Attributes:
        weight: A B reshaped like the original weight.
        rank: r.
        bits: storage bits of the factors' values (32 = floating point).
        size_bits: r (m + n) bits (+ the scales of quantised factors).
        energy: fraction of ||W||_F^2 kept by the top r singular values.
    """

    weight: torch.Tensor
    rank: int
    bits: int
    size_bits: int
    energy: float


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1)


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of the (out, in x kernel) matrix, descending."""
    return torch.linalg.svdvals(_matrix(weight).double())


def ranks_for_energy(weight: torch.Tensor, energies: Sequence[float]) -> list[int]:
    """The smallest rank keeping each fraction of ||W||_F^2 (sorted, unique)."""
    s2 = singular_values(weight) ** 2
    cumulative = torch.cumsum(s2, 0) / s2.sum()
    out = set()
    for e in energies:
        if not 0 < e <= 1:
            raise ProblemError(f"energy fractions must be in (0, 1], got {e}", field="energies")
        out.add(int(torch.searchsorted(cumulative, torch.tensor(e, dtype=cumulative.dtype)).item()) + 1)
    return sorted(min(r, len(s2)) for r in out)


def low_rank(weight: torch.Tensor, rank: int, *, bits: int = FLOAT_BITS,
             spec: QuantizerSpec = QuantizerSpec()) -> LowRank:
    """W ~ A B at ``rank``; factors quantised at ``bits`` (per row of A and of B) unless bits >= 32.

    The singular values are split evenly (A = U sqrt(S), B = sqrt(S) V'), so both factors share the range.
    """
    matrix = _matrix(weight).double()
    m, n = matrix.shape
    if not 1 <= rank <= min(m, n):
        raise ProblemError(f"rank must be in 1..{min(m, n)} for a {m}x{n} weight, got {rank}", field="rank")
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    a, b = u[:, :rank] * root, root[:, None] * vh[:rank]
    size = rank * (m + n) * FLOAT_BITS
    if bits < FLOAT_BITS:
        a, b = fake_quantize(a, bits, spec), fake_quantize(b, bits, spec)
        size = rank * (m + n) * bits + (m + rank) * SCALE_BITS
    energy = float((s[:rank] ** 2).sum() / (s ** 2).sum()) if float((s ** 2).sum()) > 0 else 1.0
    return LowRank(weight=(a @ b).reshape(weight.shape).to(weight.dtype), rank=rank, bits=bits, size_bits=int(size),
                   energy=energy)

"""Series expansion of a weight into low-bit terms (FP=xINT): W ~ sum_k Q_b(R_k) with R_0 = W and
R_{k+1} = R_k - Q_b(R_k); each term has its own per-channel scale, so the residual shrinks by about
the grid's resolution (a factor ~ 1/(2^(b-1) - 1)) per term and the sum converges to W.

Storage is honest: K terms at b bits cost K x b bits per weight plus K scales per channel. A K-term
b-bit expansion must be compared with single-term plans of the same storage, never of the same b.

Each term is kept as what a b-bit integer kernel would read (:class:`Term`): its unsigned integer codes, the
grid (per-channel scales) and its dequantised value s_k x (codes_k - zero). cetopt.quant.basis builds the K
low-bit basis models of a whole network from these terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cetopt.errors import ProblemError
from cetopt.quant.quantizers import QuantizerSpec, packed_size_bits
from cetopt.quant.rounding.grid import Grid


@dataclass(frozen=True)
class Term:
    """One term s_k Q_k of an expansion.

    Attributes:
        codes: (rows, cols) int64 unsigned codes in 0..2^b - 1 (cetopt.quant.rounding.grid's layout; rows =
            output channels under a per-channel spec).
        grid: the term's grid: float32 scales (one per channel or group) and the zero code.
        weight: the dequantised term, the original weight's shape, float64: grid.values(codes) reshaped.
    """

    codes: torch.Tensor
    grid: Grid
    weight: torch.Tensor


@dataclass(frozen=True)
class Series:
    """A K-term expansion of one weight.

    Attributes:
        weight: sum of the K terms (shape of the original).
        terms: K.
        bits: bits per term.
        size_bits: K x the packed size of one b-bit term.
        residual_norms: (K + 1,) ||R_k||_F for k = 0..K (R_0 = W).
        parts: the K terms, k = 0..K-1 (:class:`Term`); their weights sum to ``weight`` (in float64).
    """

    weight: torch.Tensor
    terms: int
    bits: int
    size_bits: int
    residual_norms: tuple[float, ...]
    parts: tuple[Term, ...] = ()

    @property
    def rates(self) -> tuple[float, ...]:
        """||R_{k+1}|| / ||R_k||: the contraction per term."""
        r = self.residual_norms
        return tuple(r[k + 1] / r[k] if r[k] > 0 else 0.0 for k in range(len(r) - 1))


def series_expand(weight: torch.Tensor, bits: int, terms: int, spec: QuantizerSpec = QuantizerSpec()) -> Series:
    """W ~ sum_{k < terms} Q_b(R_k) (see module docstring)."""
    if terms < 1:
        raise ProblemError(f"terms must be >= 1, got {terms}", field="terms")
    if bits < 2:
        raise ProblemError("series expansion needs >= 2 bits per term (1-bit terms do not contract)", field="bits")
    from cetopt.quant.rounding import round_weight

    residual = weight.detach().double()
    total = torch.zeros_like(residual)
    norms = [float(residual.norm())]
    parts = []
    for _ in range(terms):
        rounded = round_weight("nearest", residual, bits, spec)  # Q_b(R_k): codes, grid and value (float64)
        term = rounded.weight
        parts.append(Term(codes=rounded.codes, grid=rounded.grid, weight=term))
        total = total + term
        residual = residual - term
        norms.append(float(residual.norm()))
    size = terms * packed_size_bits(tuple(weight.shape), bits, spec)
    return Series(weight=total.to(weight.dtype), terms=terms, bits=bits, size_bits=size, residual_norms=tuple(norms),
                  parts=tuple(parts))

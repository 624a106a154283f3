"""The rounding protocol: a rounding turns a weight, a bit-width and a quantiser into integer codes on the
quantiser's grid (cetopt.quant.rounding.grid), the grid's scales and the dequantised weight.

What a rounding may need besides the weight (its :attr:`Rounding.needs`):

- ``quadric``: the layer's loss quadric g.d + 1/2 d'Hd seen through computed eigenpairs of the full loss
  Hessian block H_ll (cetopt.geometry.LayerQuadric): CET's own curvature (major-axis rounding);
- ``gram``: the layer-input Gram matrix G = X'X / N, (groups, p, p) for p weights per output row: the Hessian
  of the layer's output reconstruction error sum_r d_r' G d_r, a Gauss-Newton block with the loss's
  curvature in the outputs replaced by the identity (AdaRound, GPTQ).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch

from cetopt.errors import ProblemError
from cetopt.quant.spec import QuantizerSpec
from cetopt.quant.rounding.grid import Grid, matrix_shape

QUADRIC, GRAM = "quadric", "gram"


@dataclass(frozen=True)
class RoundingContext:
    """What a rounding may read besides the weight.

    Attributes:
        quadric: the layer's cetopt.geometry.LayerQuadric (n = weight.numel(), flattened torch layout).
        gram: (groups, p, p) float64 layer-input Gram matrix X'X / N per convolution group (1 for Linear),
            p = weights per output row (in x kernel / groups); cetopt.quant.adaround.layer_grams.
    """

    quadric: Any = None
    gram: torch.Tensor | None = None


@dataclass(frozen=True)
class Rounded:
    """One weight rounded.

    Attributes:
        codes: (rows, cols) int64 unsigned codes (cetopt.quant.rounding.grid's layout).
        grid: the grid (float32 scales, offsets).
        weight: dequantised codes, the input's shape and dtype (exactly what the packed file decodes to).
        info: what the rounding reports (flips, clipping ratio, damping, ...), JSON values.
    """

    codes: torch.Tensor
    grid: Grid
    weight: torch.Tensor
    info: Mapping[str, Any] = field(default_factory=dict)


class Rounding(ABC):
    """One way of choosing the codes. Subclasses set ``name``, ``needs`` and implement :meth:`codes`."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    min_bits: ClassVar[int] = 2

    @abstractmethod
    def codes(self, rows: torch.Tensor, bits: int, spec: QuantizerSpec, context: RoundingContext
              ) -> tuple[torch.Tensor, Grid, dict[str, Any]]:
        """(codes (rows, cols) int64, grid, info) for ``rows``: the weight as (rows, cols), float32 or float64."""

    def objective(self, d: torch.Tensor, context: RoundingContext) -> float | None:
        """The rounding's own objective at error ``d`` ((rows, cols) float64), or None when it claims none.
        A rounding with an objective never does worse on it than nearest on the plain grid (its test)."""
        return None

    def round(self, weight: torch.Tensor, bits: int, spec: QuantizerSpec = QuantizerSpec(),
              context: RoundingContext = RoundingContext()) -> Rounded:
        """Round ``weight`` (torch layout, any float dtype) to ``bits`` on ``spec``'s grid."""
        if isinstance(bits, bool) or not isinstance(bits, int) or not self.min_bits <= bits <= 16:
            raise ProblemError(f"{self.name} rounding needs bits in {self.min_bits}..16, got {bits!r}", field="bits")
        if QUADRIC in self.needs and context.quadric is None:
            raise ProblemError(f"{self.name} rounding needs the layer's curvature quadric (curvature with k > 0)",
                               field="rounding")
        if QUADRIC in self.needs and context.quadric.n != weight.numel():
            raise ProblemError(f"quadric of {context.quadric.name!r} has n = {context.quadric.n}, the weight "
                               f"{weight.numel()} values", field="quadric")
        if GRAM in self.needs and context.gram is None:
            raise ProblemError(f"{self.name} rounding needs the layer's input Gram matrix (calibration inputs)",
                               field="rounding")
        # the grid and the nearest codes in the weight's own precision (float32 stays float32, as it is scored
        # elsewhere); the searches compute their errors in float64
        dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        rows = weight.detach().cpu().to(dtype).reshape(matrix_shape(tuple(weight.shape), spec))
        codes, grid, info = self.codes(rows, bits, spec, context)
        values = grid.values(codes).reshape(weight.shape).to(dtype=weight.dtype, device=weight.device)
        return Rounded(codes=codes, grid=grid, weight=values, info=info)


def gram_energy(d: torch.Tensor, gram: torch.Tensor) -> float:
    """sum_r d_r' G_group(r) d_r for ``d`` (rows, p) and ``gram`` (groups, p, p): the output reconstruction
    error of the error ``d`` (mean over inputs, summed over output channels)."""
    groups = gram.shape[0]
    per = d.reshape(groups, -1, d.shape[1])
    return float(torch.einsum("grp,gpq,grq->", per, gram, per))


def check_gram(gram: torch.Tensor, rows: torch.Tensor) -> None:
    """Raise unless ``gram`` (groups, p, p) fits ``rows`` (out, p) with out a multiple of groups."""
    if gram.dim() != 3 or gram.shape[1] != rows.shape[1] or rows.shape[0] % gram.shape[0]:
        raise ProblemError(f"a Gram matrix of {tuple(gram.shape)} does not fit the weight as {tuple(rows.shape)}: "
                           "roundings on layer inputs need the per-channel layout (per_channel=True)",
                           field="quantizer")

"""The uniform grid every rounding writes its integer codes on, and the one dequantisation formula that the
roundings, the packed artefact and ``apply`` share (so a priced weight and an applied weight are the same bits).

A weight is seen as a matrix of ``rows`` x ``cols`` (torch layout flattened to (out, in x kernel) when the
quantiser is per channel, else one row). Each row is cut into groups of ``group`` consecutive columns (the
quantiser's ``group_size``; one group per row when it is 0), the last group of a row possibly shorter, and each
(row, group) has one float32 scale (and, asymmetric, one float32 offset). Stored codes are unsigned:

- symmetric, b >= 2: code u in [0, 2^b - 2], value = (u - L) x scale, L = 2^(b-1) - 1;
- symmetric, b = 1: u in {0, 1}, value = (2u - 1) x scale (sign times the mean magnitude);
- asymmetric: u in [0, 2^b - 1], value = u x scale + offset.

Values are computed in float64 from the float32 scales (what the packed file stores) and then cast to the
weight's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cetopt.errors import ProblemError
from cetopt.quant.spec import QuantizerSpec


def matrix_shape(shape: tuple[int, ...], spec: QuantizerSpec) -> tuple[int, int]:
    """(rows, cols) of a weight of ``shape`` under the quantiser's channel layout."""
    numel = math.prod(shape)
    rows = int(shape[0]) if spec.per_channel and len(shape) > 1 else 1
    return rows, numel // rows if rows else 0


def group_columns(cols: int, spec: QuantizerSpec) -> int:
    """Columns per scale group of a row of ``cols`` values (the whole row when ``spec.group_size`` is 0)."""
    return cols if spec.group_size == 0 or spec.group_size >= cols else spec.group_size


def scale_count(shape: tuple[int, ...], spec: QuantizerSpec) -> int:
    """Number of scales (and of offsets on an asymmetric grid) a weight of ``shape`` stores."""
    rows, cols = matrix_shape(shape, spec)
    return rows * math.ceil(cols / group_columns(cols, spec)) if cols else rows


def _grouped(rows: torch.Tensor, group: int) -> torch.Tensor:
    """(R, C) -> (R, G, group), the last group padded by repeating its last column (leaves min/max unchanged)."""
    r, c = rows.shape
    groups = math.ceil(c / group)
    pad = groups * group - c
    if pad:
        rows = torch.cat([rows, rows[:, -1:].expand(r, pad)], dim=1)
    return rows.reshape(r, groups, group)


def expand(per_group: torch.Tensor, group: int, cols: int) -> torch.Tensor:
    """(R, G) -> (R, cols): each group's value repeated over its columns (a broadcast view for one group)."""
    if per_group.shape[1] == 1:
        return per_group.expand(per_group.shape[0], cols)
    return per_group.repeat_interleave(group, dim=1)[:, :cols]


@dataclass(frozen=True)
class Grid:
    """The grid of one weight matrix.

    Attributes:
        scale: (rows, groups) float64 holding float32 values.
        zero: (rows, groups) integer-valued float64: the code of value 0 (symmetric: 2^(b-1) - 1; 1 bit: unused).
        offset: (rows, groups) float64 holding float32 values, float32(-zero x scale) (asymmetric), else None.
        bits, symmetric: the grid's precision and kind.
        group: columns per group; cols: columns of the matrix.
    """

    scale: torch.Tensor
    zero: torch.Tensor
    offset: torch.Tensor | None
    bits: int
    symmetric: bool
    group: int
    cols: int

    @property
    def top(self) -> int:
        """Largest unsigned code."""
        if self.symmetric:
            return 1 if self.bits == 1 else 2 ** self.bits - 2
        return 2 ** self.bits - 1

    def columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) per (row, column), float64 (rows, cols): code = clamp(round(w / scale) + zero)."""
        return expand(self.scale, self.group, self.cols), expand(self.zero, self.group, self.cols)

    def _quotient(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w / scale in the rows' own precision (float32 weights round as a float32 computation would), zero."""
        scale, zero = self.columns()
        return rows / scale.to(rows.dtype), zero

    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """Round-to-nearest codes of ``rows`` ((rows, cols)), int64."""
        if self.symmetric and self.bits == 1:
            return (rows >= 0).long()
        quotient, zero = self._quotient(rows)
        return torch.clamp(torch.round(quotient).double() + zero, 0, self.top).long()

    def floor_ceil(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two grid neighbours' codes of each value (equal where the value is outside the range), int64."""
        quotient, zero = self._quotient(rows)
        floor = torch.clamp(torch.floor(quotient).double() + zero, 0, self.top)
        return floor.long(), torch.clamp(floor + 1, 0, self.top).long()

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        """float64 values of ``codes`` ((rows, cols))."""
        return dequantize(codes, self.scale, self.offset, self.bits, self.symmetric, self.group)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None, bits: int, symmetric: bool,
               group: int) -> torch.Tensor:
    """float64 values of unsigned ``codes`` (rows, cols) on the grid of ``scale`` / ``offset`` (rows, groups).

    The one formula: the roundings compute their weights with it and cetopt.quant.pack decodes with it."""
    cols = codes.shape[1]
    c = codes.double()
    s = expand(scale.double(), group, cols)
    if not symmetric:
        return c * s + expand(offset.double(), group, cols)  # type: ignore[union-attr]
    if bits == 1:
        return (2 * c - 1) * s
    return (c - (2 ** (bits - 1) - 1)) * s


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float().double()


def make_grid(rows: torch.Tensor, bits: int, spec: QuantizerSpec, ratio: torch.Tensor | float = 1.0) -> Grid:
    """The b-bit grid of ``rows`` ((rows, cols)) with each group's range scaled by ``ratio`` (a float or a
    (rows, groups) tensor): symmetric range max|w| (1 bit: mean|w|), asymmetric min..max. The range is computed
    in the rows' precision and the scale rounded to float32 (what is stored)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ProblemError(f"bits must be an integer in 1..16, got {bits!r}", field="bits")
    cols = rows.shape[1]
    group = group_columns(cols, spec)
    return _grid_of_groups(_grouped(rows, group), bits, spec, ratio, cols)


def _grid_of_groups(g: torch.Tensor, bits: int, spec: QuantizerSpec, ratio: torch.Tensor | float, cols: int) -> Grid:
    """:func:`make_grid` from the grouped rows ``g`` (R, G, group)."""
    group = g.shape[2]
    if torch.is_tensor(ratio):
        ratio = ratio.to(g.dtype)
    if spec.symmetric:
        if bits == 1:
            valid = _valid_mask(cols, group, g.device).to(g.dtype)
            scale = _as_float32((g.abs() * valid).sum(dim=2) / valid.sum(dim=2) * ratio)
            return Grid(scale, torch.zeros_like(scale), None, bits, True, group, cols)
        levels = 2 ** (bits - 1) - 1
        top = g.abs().amax(dim=2) * ratio
        scale = _as_float32(torch.where(top > 0, top / levels, torch.ones_like(top)))
        return Grid(scale, torch.full_like(scale, float(levels)), None, bits, True, group, cols)
    low, high = g.amin(dim=2) * ratio, g.amax(dim=2) * ratio
    levels = 2 ** bits - 1
    span = high - low
    scale32 = torch.where(span > 0, span / levels, torch.ones_like(span)).float()
    zero = torch.round(-low.float() / scale32).double() if g.dtype != torch.float64 else \
        torch.round(-low / scale32.double())
    scale = scale32.double()
    return Grid(scale, zero, _as_float32(-zero * scale), bits, False, group, cols)


def _valid_mask(cols: int, group: int, device: torch.device) -> torch.Tensor:
    """(1, groups, group) 1.0 on real columns, 0.0 on the padding of the last group."""
    groups = math.ceil(cols / group)
    return (torch.arange(groups * group, device=device) < cols).double().reshape(1, groups, group)


def _nearest_errors(g: torch.Tensor, exact: torch.Tensor, valid: torch.Tensor | None, grid: Grid) -> torch.Tensor:
    """(R, G) |d|^2 of round-to-nearest on ``grid`` per group: :meth:`Grid.nearest` and :func:`dequantize` on the
    grouped rows (R, G, group), the scales broadcast instead of expanded. Symmetric codes are used signed,
    clamp(round(w / s), -L, L) = u - L exactly (integers), so the values are those :func:`dequantize` gives."""
    scale = grid.scale[..., None]
    if grid.symmetric and grid.bits == 1:
        values = (2 * (g >= 0).double() - 1) * scale
    elif grid.symmetric:
        levels = 2 ** (grid.bits - 1) - 1
        values = torch.round(g / scale.to(g.dtype)).clamp_(-levels, levels).double().mul_(scale)
    else:
        zero = grid.zero[..., None]
        codes = torch.clamp(torch.round(g / scale.to(g.dtype)).double() + zero, 0, grid.top)
        values = codes * scale + grid.offset[..., None]  # type: ignore[index]
    values.sub_(exact).square_()
    return (values if valid is None else values.mul_(valid)).sum(dim=2)


def mse_grid(rows: torch.Tensor, bits: int, spec: QuantizerSpec) -> Grid:
    """The grid whose clipping ratio, per (row, group), minimises the round-to-nearest error |d|^2 over the
    ratios 1 and linspace(spec.clip_min, 1, spec.clip_grid) (ratio 1 first; a ratio replaces it only when
    strictly better: the search of cetopt.quant.quantizers.fake_quantize, per group)."""
    cols = rows.shape[1]
    group = group_columns(cols, spec)
    g = _grouped(rows, group)
    exact = g.double()
    valid = _valid_mask(cols, group, rows.device) if cols % group else None
    best_err = _nearest_errors(g, exact, valid, _grid_of_groups(g, bits, spec, 1.0, cols))
    ratio = torch.ones_like(best_err)
    for r in torch.linspace(spec.clip_min, 1.0, spec.clip_grid, dtype=rows.dtype).tolist()[:-1]:
        err = _nearest_errors(g, exact, valid, _grid_of_groups(g, bits, spec, r, cols))
        better = err < best_err
        ratio = torch.where(better, torch.full_like(ratio, r), ratio)
        best_err = torch.where(better, err, best_err)
    return _grid_of_groups(g, bits, spec, ratio, cols)


def spec_grid(rows: torch.Tensor, bits: int, spec: QuantizerSpec) -> Grid:
    """The grid the quantiser's ``clip`` setting asks for: full range ("none") or MSE-clipped ("mse")."""
    return mse_grid(rows, bits, spec) if spec.clip == "mse" else make_grid(rows, bits, spec)

"""Packed storage of compressed weights: integer codes bit-packed into bytes, one float32 scale per grid row
(and an offset on asymmetric grids), low-rank factors and series terms packed alike; and THE definition of
packed size and ratio that apply, compare, bench and demo all report.

A grid part of R rows x C values at b bits stores ``ceil(R C b / 8)`` bytes of codes plus R float32 scales
(symmetric: value = code x scale; asymmetric: value = code x scale + offset, R more floats). Rows are
output channels when the quantiser is per channel, else one row for the whole tensor. A layer is

- plain (rounding nearest or major-axis): one part, the weight as (out, in x kernel);
- a K-term series: K parts, term k quantising the residual R_k (cetopt.quant.series);
- rank r: factors A (out, r) and B (r, in x kernel) as two parts, or as float32 when bits >= 32
  (cetopt.quant.lowrank; singular values split evenly between the factors).

Every other parameter is stored at 32 bits, buffers as they are. :func:`layer_packed_bits` computes a layer's
size from its shape alone; the tensors written by :func:`compress_layer` have exactly that many bytes
(tests/quant/test_pack.py), and :class:`PackedSize` adds up a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from cetopt.errors import ProblemError
from cetopt.quant.plan import LayerChoice, Plan
from cetopt.quant.quantizers import SCALE_BITS, QuantizerSpec, fake_quantize
from cetopt.quant.rounding.grid import dequantize, scale_count

if TYPE_CHECKING:
    from torch import nn

    from cetopt.quant.rounding.base import Rounded

    from cetopt.problem.model import AllocationProblem

FLOAT_BITS = 32
TOLERANCE = 0.01  # a recovered code may sit this fraction of a grid step off its value (float rounding only)


def _rows(shape: tuple[int, ...], per_channel: bool) -> tuple[int, int]:
    """(rows, values per row) of a tensor of ``shape`` under the quantiser's channel layout."""
    numel = math.prod(shape)
    rows = shape[0] if per_channel and len(shape) > 1 else 1
    return rows, numel // rows if rows else 0


def part_size(shape: tuple[int, ...], bits: int, spec: QuantizerSpec) -> tuple[int, int]:
    """(code bits, scale bits) of one grid part: whole bytes of codes; one float32 scale (and offset) per row, or
    per group of ``spec.group_size`` inputs of a row (cetopt.quant.rounding.grid.scale_count)."""
    rows, cols = _rows(shape, spec.per_channel)
    return 8 * math.ceil(rows * cols * bits / 8), scale_count(shape, spec) * SCALE_BITS * (1 if spec.symmetric else 2)


def part_bits(shape: tuple[int, ...], bits: int, spec: QuantizerSpec) -> int:
    """Stored bits of one grid part: codes plus scales (:func:`part_size`)."""
    return sum(part_size(shape, bits, spec))


def layer_size_parts(shape: tuple[int, ...], choice: LayerChoice, spec: QuantizerSpec) -> tuple[int, int, int]:
    """(code bits, scale bits, float bits) of one layer's stored weight (``shape``: torch layout) under
    ``choice``: the size vocabulary's codes, scales and (float32 low-rank factors) other parameters."""
    m = int(shape[0])
    n = math.prod(shape) // m
    if choice.rank is not None:
        r = choice.rank
        if choice.bits >= FLOAT_BITS:
            return 0, 0, FLOAT_BITS * r * (m + n)
        parts = [(m, r), (r, n)]
    else:
        parts = [tuple(shape)] * choice.terms
    sizes = [part_size(p, choice.bits, spec) for p in parts]
    return sum(c for c, _ in sizes), sum(s for _, s in sizes), 0


def layer_packed_bits(shape: tuple[int, ...], choice: LayerChoice, spec: QuantizerSpec) -> int:
    """Stored bits of one layer's weight (``shape``: torch layout) under ``choice``."""
    return sum(layer_size_parts(shape, choice, spec))


@dataclass(frozen=True)
class PackedSize:
    """Packed size of a model under a plan (the one definition every report uses): what a deployable copy
    stores, i.e. what ``cetopt apply`` writes, less the file header.

    Attributes:
        layers: planned layer -> stored bits of its weight (codes, scales, factors, terms).
        other_bits: every parameter the plan leaves alone, at 32 bits.
        buffer_bits: the model's buffers (BatchNorm running statistics, ...) at their own precision.
        fp32_bits: the uncompressed model: every parameter at 32 bits plus the same buffers.
        code_bits: the planned layers' integer codes (part of ``layers``).
        scale_bits: their float32 scales and offsets (part of ``layers``).

    The size vocabulary (docs/artifact-format.md): codes + scales + other parameters (:attr:`rest_bits`) =
    :attr:`total_bits`; a file adds its container overhead.
    """

    layers: Mapping[str, int]
    other_bits: int
    fp32_bits: int
    buffer_bits: int = 0
    code_bits: int = 0
    scale_bits: int = 0

    @property
    def rest_bits(self) -> int:
        """Other parameters: everything stored in floating point (unplanned parameters, float low-rank
        factors, buffers)."""
        return self.total_bits - self.code_bits - self.scale_bits

    @property
    def total_bits(self) -> int:
        return int(sum(self.layers.values())) + self.other_bits + self.buffer_bits

    @property
    def total_bytes(self) -> int:
        return math.ceil(self.total_bits / 8)

    @property
    def ratio(self) -> float:
        """Uncompressed size / packed size."""
        return self.fp32_bits / self.total_bits if self.total_bits else float("inf")


def buffer_bits(model: "nn.Module") -> int:
    """Bits of the state-dict entries that are not parameters (buffers), at their own dtype."""
    params = {n for n, _ in model.named_parameters()}
    return sum(8 * t.numel() * t.element_size() for n, t in model.state_dict().items() if n not in params)


def model_packed_size(model: "nn.Module", plan: Plan) -> PackedSize:
    """Packed size of ``model`` under ``plan``."""
    from cetopt.curvature.layers import layer_weight, weight_key

    parts = {name: layer_size_parts(tuple(layer_weight(model, name).shape), c, plan.quantizer_of(name))
             for name, c in plan.layers.items()}
    layers = {name: sum(p) for name, p in parts.items()}
    planned = {weight_key(model, name) for name in plan.layers}
    total = other = 0
    for pname, param in model.named_parameters():
        total += param.numel()
        other += 0 if pname in planned else param.numel()
    buffers = buffer_bits(model)
    return PackedSize(layers=layers, other_bits=FLOAT_BITS * other, fp32_bits=FLOAT_BITS * total + buffers,
                      buffer_bits=buffers, code_bits=sum(p[0] for p in parts.values()),
                      scale_bits=sum(p[1] for p in parts.values()))


def problem_packed_size(problem: "AllocationProblem", plan: Plan) -> PackedSize | None:
    """Packed size from a problem file alone: its layer shapes and quantiser, plus the model's other
    parameters and buffers (metadata "other_params" and "buffer_bits", written by cetopt.workflow.build_for).
    None when the problem does not describe a model (no shapes or no such metadata)."""
    other, buffers = problem.metadata.get("other_params"), problem.metadata.get("buffer_bits")
    if not isinstance(other, int) or not isinstance(buffers, int) or any(layer.shape is None for layer in problem.layers):
        return None
    parts = {layer.name: layer_size_parts(tuple(layer.shape), plan.layers[layer.name], plan.quantizer_of(layer.name))
             for layer in problem.layers}
    layers = {name: sum(p) for name, p in parts.items()}
    total = problem.total_params + other
    return PackedSize(layers=layers, other_bits=FLOAT_BITS * other, fp32_bits=FLOAT_BITS * total + buffers,
                      buffer_bits=buffers, code_bits=sum(p[0] for p in parts.values()),
                      scale_bits=sum(p[1] for p in parts.values()))


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integer codes (< 2^bits) -> a uint8 array of ceil(n bits / 8) bytes (little-endian bits)."""
    planes = (codes.astype(np.uint32).reshape(-1, 1) >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_codes(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes as int64."""
    planes = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits).astype(np.int64)
    return planes @ (np.int64(1) << np.arange(bits, dtype=np.int64))


def _symmetric_grid(q: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(unsigned codes, scale per row) of grid values q (rows x values) on a symmetric b-bit grid."""
    top = np.abs(q).max(axis=1)
    if bits == 1:  # values +-magnitude: one sign bit
        return (q >= 0).astype(np.int64), top
    levels = 2 ** (bits - 1) - 1
    scale = np.where(top > 0, top / levels, 1.0)
    codes = np.round(q / scale[:, None])
    bad = np.abs(codes * scale[:, None] - q).max(axis=1, initial=0.0) > TOLERANCE * scale
    for k in range(levels - 1, 0, -1):  # rows whose largest code is below the top level
        if not bad.any():
            break
        s = top[bad] / k
        c = np.round(q[bad] / s[:, None])
        ok = np.abs(c * s[:, None] - q[bad]).max(axis=1) <= TOLERANCE * s
        rows = np.flatnonzero(bad)[ok]
        scale[rows], codes[rows] = s[ok], c[ok]
        bad[rows] = False
    if bad.any():
        raise ProblemError(f"row {int(np.flatnonzero(bad)[0])} is not on a {bits}-bit symmetric grid", field="weight")
    return (codes + levels).astype(np.int64), scale


def _asymmetric_grid(q: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scale, offset) per row: value = code x scale + offset, codes in [0, 2^b - 1]."""
    low, high = q.min(axis=1), q.max(axis=1)
    levels = 2 ** bits - 1
    span = high - low
    scale, codes = np.ones_like(span), np.zeros_like(q)
    bad = span > 0
    for k in range(levels, 0, -1):
        if not bad.any():
            break
        s = span[bad] / k
        c = np.round((q[bad] - low[bad, None]) / s[:, None])
        ok = np.abs(c * s[:, None] + low[bad, None] - q[bad]).max(axis=1) <= TOLERANCE * s
        rows = np.flatnonzero(bad)[ok]
        scale[rows], codes[rows] = s[ok], c[ok]
        bad[rows] = False
    if bad.any():
        raise ProblemError(f"row {int(np.flatnonzero(bad)[0])} is not on a {bits}-bit grid", field="weight")
    return codes.astype(np.int64), scale, low


def encode(values: torch.Tensor, bits: int, spec: QuantizerSpec, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Grid values (any shape, already quantised) -> stored tensors ``prefix.codes``, ``prefix.scale``
    (``prefix.offset``) and the part's layout (shape, bits, symmetric)."""
    shape = tuple(values.shape)
    rows, cols = _rows(shape, spec.per_channel)
    q = values.detach().double().cpu().numpy().reshape(rows, cols)
    if spec.symmetric:
        codes, scale = _symmetric_grid(q, bits)
        out = {f"{prefix}.scale": torch.from_numpy(scale.astype(np.float32))}
    else:
        codes, scale, offset = _asymmetric_grid(q, bits)
        out = {f"{prefix}.scale": torch.from_numpy(scale.astype(np.float32)),
               f"{prefix}.offset": torch.from_numpy(offset.astype(np.float32))}
    out[f"{prefix}.codes"] = torch.from_numpy(pack_codes(codes, bits))
    return out, {"shape": list(shape), "rows": rows, "bits": bits, "symmetric": spec.symmetric}


def decode(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], prefix: str) -> torch.Tensor:
    """Stored part -> float64 values shaped as ``layout["shape"]``."""
    shape, rows, bits = tuple(layout["shape"]), int(layout["rows"]), int(layout["bits"])
    count = math.prod(shape)
    if "group" in layout:
        return _decode_groups(tensors, layout, prefix)
    try:
        data, scale = tensors[f"{prefix}.codes"].numpy(), tensors[f"{prefix}.scale"].double().numpy()
        codes = unpack_codes(data, bits, count).reshape(rows, count // rows).astype(np.float64)
        if layout["symmetric"]:
            signed = 2 * codes - 1 if bits == 1 else codes - (2 ** (bits - 1) - 1)
            values = signed * scale[:, None]
        else:
            values = codes * scale[:, None] + tensors[f"{prefix}.offset"].double().numpy()[:, None]
    except (KeyError, ValueError) as err:
        raise ProblemError(f"packed part {prefix!r} is missing or malformed ({err})", field="tensors") from None
    return torch.from_numpy(values.reshape(shape))


def encode_rounded(rounded: "Rounded", shape: tuple[int, ...], prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A rounding's codes and grid (cetopt.quant.rounding) -> stored tensors and layout, written as they are
    (no recovery from values): what was priced is what is stored."""
    grid = rounded.grid
    rows = rounded.codes.shape[0]
    out = {f"{prefix}.scale": grid.scale.float().reshape(-1).contiguous(),
           f"{prefix}.codes": torch.from_numpy(pack_codes(rounded.codes.reshape(-1).numpy(), grid.bits))}
    if grid.offset is not None:
        out[f"{prefix}.offset"] = grid.offset.float().reshape(-1).contiguous()
    return out, {"shape": list(shape), "rows": rows, "bits": grid.bits, "symmetric": grid.symmetric,
                 "group": grid.group}


def _decode_groups(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], prefix: str) -> torch.Tensor:
    """A part written by :func:`encode_rounded` -> float64 values (cetopt.quant.rounding.grid.dequantize)."""
    shape, rows, bits, group = tuple(layout["shape"]), int(layout["rows"]), int(layout["bits"]), int(layout["group"])
    count = math.prod(shape)
    cols = count // rows
    groups = math.ceil(cols / group)
    try:
        codes = torch.from_numpy(unpack_codes(tensors[f"{prefix}.codes"].numpy(), bits, count).reshape(rows, cols))
        scale = tensors[f"{prefix}.scale"].double().reshape(rows, groups)
        offset = None if layout["symmetric"] else tensors[f"{prefix}.offset"].double().reshape(rows, groups)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ProblemError(f"packed part {prefix!r} is missing or malformed ({err})", field="tensors") from None
    return dequantize(codes, scale, offset, bits, bool(layout["symmetric"]), group).reshape(shape)


@dataclass(frozen=True)
class PackedLayer:
    """One layer compressed and packed.

    Attributes:
        weight: the reconstruction (what the stored tensors decode to), float64, the weight's shape.
        tensors: stored tensors, keyed ``<layer>.weight.<part>.<codes|scale|offset>`` (or ``.<a|b>`` floats).
        layout: what :func:`unpack_layer` needs (shape, rank, parts).
    """

    weight: torch.Tensor
    tensors: Mapping[str, torch.Tensor]
    layout: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stored_bits(self) -> int:
        return sum(8 * t.numel() * t.element_size() for t in self.tensors.values())


def _plain(weight: torch.Tensor, choice: LayerChoice, spec: QuantizerSpec, context: Any, name: str) -> "Rounded":
    """The layer's codes by its registered rounding (cetopt.quant.rounding), on its context (quadric, Gram)."""
    from cetopt.quant.rounding import get_rounding
    from cetopt.quant.rounding.base import GRAM, QUADRIC, RoundingContext

    rounding = get_rounding(choice.rounding)
    context = context if context is not None else RoundingContext()
    if (QUADRIC in rounding.needs and context.quadric is None) or (GRAM in rounding.needs and context.gram is None):
        what = "curvature (quadric)" if QUADRIC in rounding.needs else "calibration inputs (Gram matrix)"
        raise ProblemError(f"layer {name!r} is rounded {choice.rounding}: that needs its {what}; apply through "
                           "cetopt.artifact, which computes it from the model's calibration data", field="rounding")
    return rounding.round(weight, choice.bits, spec, context)


def low_rank_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (out, r), B (r, in x kernel) of the truncated SVD, singular values split evenly (as cetopt.quant.lowrank)."""
    matrix = weight.detach().double().reshape(weight.shape[0], -1)
    m, n = matrix.shape
    if not 1 <= rank <= min(m, n):
        raise ProblemError(f"rank must be in 1..{min(m, n)} for a {m}x{n} weight, got {rank}", field="rank")
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def compress_layer(weight: torch.Tensor, choice: LayerChoice, spec: QuantizerSpec, *, quadric: Any = None,
                   name: str = "layer", context: Any = None) -> PackedLayer:
    """Compress ``weight`` (torch layout) as ``choice`` says and pack it; ``weight`` of the result is exactly
    what the packed tensors decode to. A plain choice is rounded by its registered rounding and its codes are
    stored as they are; ``context`` (cetopt.quant.rounding.base.RoundingContext) or ``quadric`` gives what the
    rounding needs."""
    if quadric is not None and context is None:
        from cetopt.quant.rounding.base import RoundingContext

        context = RoundingContext(quadric=quadric)
    if spec.group_size and (choice.rank is not None or choice.terms > 1):
        raise ProblemError("group scales apply to plain quantisation; low-rank and series choices use the "
                           "per-channel grid", field="group_size")
    w = weight.detach().double().cpu()
    prefix = f"{name}.weight"
    tensors: dict[str, torch.Tensor] = {}
    parts: dict[str, dict] = {}
    if choice.rank is not None:
        a, b = low_rank_factors(w, choice.rank)
        if choice.bits >= FLOAT_BITS:
            tensors = {f"{prefix}.a": a.float().contiguous(), f"{prefix}.b": b.float().contiguous()}
        else:
            for key, factor in (("a", a), ("b", b)):
                t, parts[key] = encode(fake_quantize(factor, choice.bits, spec), choice.bits, spec, f"{prefix}.{key}")
                tensors.update(t)
    elif choice.terms == 1:  # plain: rounded in the weight's dtype, as scored
        t, parts["t0"] = encode_rounded(_plain(weight.detach().cpu(), choice, spec, context, name),
                                        tuple(weight.shape), f"{prefix}.t0")
        tensors.update(t)
    else:
        residual = w
        for k in range(choice.terms):
            t, parts[f"t{k}"] = encode(fake_quantize(residual, choice.bits, spec), choice.bits, spec, f"{prefix}.t{k}")
            tensors.update(t)
            residual = residual - decode(t, parts[f"t{k}"], f"{prefix}.t{k}")
    layout = {"shape": list(weight.shape), "rank": choice.rank, "parts": parts}
    return PackedLayer(weight=unpack_layer(tensors, layout, name), tensors=tensors, layout=layout)


def unpack_layer(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], name: str) -> torch.Tensor:
    """The float64 weight of layer ``name`` from its stored tensors and layout."""
    prefix, shape = f"{name}.weight", tuple(layout["shape"])
    parts = layout["parts"]
    if layout.get("rank") is not None:
        if not parts:
            a, b = tensors[f"{prefix}.a"].double(), tensors[f"{prefix}.b"].double()
        else:
            a, b = (decode(tensors, parts[k], f"{prefix}.{k}") for k in ("a", "b"))
        return (a @ b).reshape(shape)
    total = torch.zeros(shape, dtype=torch.float64)
    for key in sorted(parts, key=lambda k: int(k[1:])):
        total = total + decode(tensors, parts[key], f"{prefix}.{key}")
    return total


def budget_left(problem: "AllocationProblem", size_bits: float | None) -> float | None:
    """Size budget left unused by a plan of ``size_bits`` (bits, the problem's own size model), or None when
    the budget sets no size limit or there is no plan."""
    limit = problem.max_size_bits
    if limit is None or size_bits is None:
        return None
    return max(0.0, float(limit) - float(size_bits))

"""The ONNX that cetopt writes: its opset and IR versions, the integer types packed codes are stored in, and the
DequantizeLinear subgraph that rebuilds each planned layer's weight from them (cetopt.quant.pack's layout)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from cetopt.errors import ProblemError
from cetopt.quant.pack import unpack_codes


ONNX_FORMAT = "cetopt.onnx/1"


OPSET = 25  # INT2/UINT2 (opset 25), INT4/UINT4 and INT16 DequantizeLinear; onnxruntime 1.30 runs up to 25


TORCH_OPSET = 20  # the newest opset torch's TorchScript exporter writes; onnx.version_converter lifts it


IR_VERSION = 11  # opset 25's IR (INT2); onnxruntime 1.30 reads up to 13


def require_onnx() -> None:
    """Raise a ProblemError naming the extra when onnx or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ProblemError(f"ONNX export needs {', '.join(missing)}: pip install 'cetopt[export]'", field="--format")


def storage_type(bits: int, symmetric: bool) -> tuple[int, Any]:
    """(onnx TensorProto type, numpy dtype) holding b-bit codes: signed on a symmetric grid, else unsigned."""
    import ml_dtypes
    from onnx import TensorProto

    if bits <= 2:
        return (TensorProto.INT2, ml_dtypes.int2) if symmetric else (TensorProto.UINT2, ml_dtypes.uint2)
    if bits <= 4:
        return (TensorProto.INT4, ml_dtypes.int4) if symmetric else (TensorProto.UINT4, ml_dtypes.uint4)
    if bits <= 8:
        return (TensorProto.INT8, np.int8) if symmetric else (TensorProto.UINT8, np.uint8)
    return (TensorProto.INT16, np.int16) if symmetric else (TensorProto.UINT16, np.uint16)


def storage_name(bits: int, symmetric: bool) -> str:
    """``int4``, ``uint8``, ...: the ONNX type a part's codes are stored as."""
    from onnx import TensorProto

    return TensorProto.DataType.Name(storage_type(bits, symmetric)[0]).lower()


def part_codes(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], prefix: str) -> np.ndarray:
    """The stored integer codes of part ``prefix`` as ONNX holds them, shaped as the part: signed around the
    grid's centre on a symmetric grid (cetopt.quant.pack.decode's ``signed``), unsigned otherwise."""
    shape, bits = tuple(layout["shape"]), int(layout["bits"])
    try:
        codes = unpack_codes(tensors[f"{prefix}.codes"].numpy(), bits, math.prod(shape))
    except (KeyError, ValueError) as err:
        raise ProblemError(f"packed part {prefix!r} is missing or malformed ({err})", field="tensors") from None
    if layout["symmetric"]:
        codes = 2 * codes - 1 if bits == 1 else codes - (2 ** (bits - 1) - 1)
    return codes.reshape(shape).astype(storage_type(bits, bool(layout["symmetric"]))[1])


def _dequantize_part(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], prefix: str,
                     output: str) -> tuple[list, list]:
    """Nodes and initializers computing part ``prefix`` into tensor ``output`` (float32, the part's shape)."""
    from onnx import helper, numpy_helper

    shape, rows = tuple(layout["shape"]), int(layout["rows"])
    cols = math.prod(shape) // rows
    if 0 < int(layout.get("group", 0)) < cols:
        return _dequantize_blocks(tensors, layout, prefix, output)
    scale = tensors[f"{prefix}.scale"].numpy().astype(np.float32)
    inits = [numpy_helper.from_array(part_codes(tensors, layout, prefix), f"{prefix}.codes")]
    per_row = rows > 1
    inits.append(numpy_helper.from_array(scale if per_row else scale.reshape(()), f"{prefix}.scale"))
    attrs = {"axis": 0} if per_row else {}
    if layout["symmetric"]:
        return [helper.make_node("DequantizeLinear", [f"{prefix}.codes", f"{prefix}.scale"], [output],
                                 name=f"{prefix}.dequantize", **attrs)], inits
    offset = tensors[f"{prefix}.offset"].numpy().astype(np.float32)
    offset = offset.reshape((rows,) + (1,) * (len(shape) - 1)) if per_row else offset.reshape(())
    inits.append(numpy_helper.from_array(offset, f"{prefix}.offset"))
    nodes = [helper.make_node("DequantizeLinear", [f"{prefix}.codes", f"{prefix}.scale"], [f"{prefix}.scaled"],
                              name=f"{prefix}.dequantize", **attrs),
             helper.make_node("Add", [f"{prefix}.scaled", f"{prefix}.offset"], [output], name=f"{prefix}.add_offset")]
    return nodes, inits


def _dequantize_blocks(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], prefix: str,
                       output: str) -> tuple[list, list]:
    """A part with group scales (cetopt.quant.rounding.grid): the codes as a (rows, cols) initializer,
    DequantizeLinear blocked along the columns (opset 21's ``block_size``: one scale per ``group`` columns of a
    row, the last block possibly shorter), then ``Reshape`` to the weight's shape."""
    from onnx import helper, numpy_helper

    shape, rows, group = tuple(layout["shape"]), int(layout["rows"]), int(layout["group"])
    cols = math.prod(shape) // rows
    if not layout["symmetric"]:
        raise ProblemError(f"part {prefix!r}: an asymmetric grid with group scales has a float offset per group, which "
                           "ONNX's DequantizeLinear (an integer zero point) cannot hold; export a symmetric or a "
                           "per-channel plan", field="quantizer.group_size")
    scale = tensors[f"{prefix}.scale"].numpy().astype(np.float32).reshape(rows, math.ceil(cols / group))
    codes = part_codes(tensors, layout, prefix).reshape(rows, cols)
    inits = [numpy_helper.from_array(codes, f"{prefix}.codes"), numpy_helper.from_array(scale, f"{prefix}.scale")]
    blocks = output if len(shape) == 2 else f"{prefix}.blocks"
    nodes = [helper.make_node("DequantizeLinear", [f"{prefix}.codes", f"{prefix}.scale"], [blocks],
                              name=f"{prefix}.dequantize", axis=1, block_size=group)]
    if len(shape) != 2:
        inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{prefix}.shape"))
        nodes.append(helper.make_node("Reshape", [blocks, f"{prefix}.shape"], [output], name=f"{prefix}.reshape"))
    return nodes, inits


def layer_subgraph(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any], name: str,
                   key: str | None = None) -> tuple[list, list, str]:
    """(nodes, initializers, storage) computing layer ``name``'s weight into tensor ``key`` (default
    ``<name>.weight``; a bare Parameter's own path) from its stored parts (see the module docstring); storage
    names the code types, e.g. ``int4`` or ``3 x int4``."""
    from onnx import helper, numpy_helper

    # stored parts are named after <name>.weight (cetopt.quant.pack); only the computed weight takes ``key``
    prefix, shape, parts = f"{name}.weight", tuple(layout["shape"]), layout["parts"]
    key = key or prefix
    if layout.get("rank") is not None:
        nodes, inits = [], []
        for k in ("a", "b"):
            if parts:
                n, i = _dequantize_part(tensors, parts[k], f"{prefix}.{k}", f"{prefix}.{k}")
                nodes += n
                inits += i
            else:
                inits.append(numpy_helper.from_array(tensors[f"{prefix}.{k}"].numpy().astype(np.float32),
                                                     f"{prefix}.{k}"))
        product = key if len(shape) == 2 else f"{prefix}.product"
        nodes.append(helper.make_node("MatMul", [f"{prefix}.a", f"{prefix}.b"], [product], name=f"{prefix}.matmul"))
        if len(shape) != 2:
            inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{prefix}.shape"))
            nodes.append(helper.make_node("Reshape", [product, f"{prefix}.shape"], [key], name=f"{prefix}.reshape"))
        kind = "float32" if not parts else storage_name(int(parts["a"]["bits"]), bool(parts["a"]["symmetric"]))
        return nodes, inits, f"rank {layout['rank']} {kind}"
    order = sorted(parts, key=lambda k: int(k[1:]))
    nodes, inits = [], []
    outputs = [key] if len(order) == 1 else [f"{prefix}.{k}" for k in order]
    for k, out in zip(order, outputs):
        n, i = _dequantize_part(tensors, parts[k], f"{prefix}.{k}", out)
        nodes += n
        inits += i
    if len(order) > 1:
        nodes.append(helper.make_node("Sum", outputs, [key], name=f"{prefix}.sum"))
    first = parts[order[0]]
    kind = storage_name(int(first["bits"]), bool(first["symmetric"]))
    return nodes, inits, kind if len(order) == 1 else f"{len(order)} x {kind}"

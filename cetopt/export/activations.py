"""Static 8-bit activation quantisation of an exported graph: a QuantizeLinear/DequantizeLinear pair on the
activation input of every Conv, Gemm and MatMul whose weight is quantised, with one scale and zero point per
tensor calibrated on the spec's calibration batches (run through the graph itself in onnxruntime).

Observers (per tensor, over every calibration batch):

- ``minmax``: the range [min, max] of every value seen;
- ``percentile``: [p, 100 - p] percentiles (p = :data:`PERCENTILE_TAIL`) of a strided sample of at most
  :data:`SAMPLE` values per batch, pooled over the batches (outliers clipped).

The grid is asymmetric, uint8 at 8 bits or uint4 at 4 (the widths ONNX's QuantizeLinear has below 16):
scale = (high - low) / (2^b - 1), zero point round(-low / scale), the range first widened to include 0 so
zero is exact. The weights keep their own DequantizeLinear; the outputs of Conv/Gemm/MatMul stay float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from cetopt.errors import ProblemError
from cetopt.export.call import ModelCall

if TYPE_CHECKING:
    import onnx

OBSERVERS = ("minmax", "percentile")
PERCENTILE_TAIL = 0.01  # percent clipped at each end by the percentile observer
SAMPLE = 200_000  # values per tensor per batch the percentile observer keeps (strided)


@dataclass(frozen=True)
class ActivationGrid:
    """One activation tensor's grid: value = (q - zero_point) x scale, q in [0, 2^bits - 1]."""

    tensor: str
    low: float
    high: float
    scale: float
    zero_point: int
    bits: int


def activation_inputs(proto: "onnx.ModelProto", weights: set[str]) -> list[str]:
    """Activation tensors to quantise: input 0 of each Conv/Gemm/MatMul whose weight (input 1, possibly through a
    Transpose) is one of ``weights`` (the planned layers' ``<layer>.weight`` tensors), in graph order."""
    transposed = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Transpose"}
    seen, out = set(), []
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
            weight = transposed.get(node.input[1], node.input[1])
            if weight in weights and node.input[0] not in seen:
                seen.add(node.input[0])
                out.append(node.input[0])
    return out


def grid_for(tensor: str, low: float, high: float, bits: int) -> ActivationGrid:
    """The asymmetric b-bit grid of [low, high] (widened to include 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    levels = 2 ** bits - 1
    scale = (high - low) / levels if high > low else 1.0
    zero = int(np.clip(round(-low / scale), 0, levels))
    return ActivationGrid(tensor=tensor, low=low, high=high, scale=float(np.float32(scale)), zero_point=zero, bits=bits)


def calibrate(proto: "onnx.ModelProto", call: ModelCall, loss_fn: Any, batches: Any, tensors: list[str], *,
              bits: int = 8, observer: str = "minmax", threads: int | None = None) -> dict[str, ActivationGrid]:
    """Run ``proto`` in onnxruntime through ``loss_fn`` on ``batches`` and fit each of ``tensors`` a grid.

    Raises:
        ProblemError: unknown observer, or bits other than 4 or 8.
    """
    import onnx

    from cetopt.export.onnx_eval import OnnxModule, onnx_session

    if observer not in OBSERVERS:
        raise ProblemError(f"unknown observer {observer!r}; use one of {OBSERVERS}", field="--observer")
    if bits not in (4, 8):
        raise ProblemError(f"activation bits must be 4 or 8 (ONNX's QuantizeLinear types), got {bits}",
                           field="--activation-bits")
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    session = onnx_session(probe.SerializeToString(), threads)
    lows: dict[str, list[float]] = {t: [] for t in tensors}
    highs: dict[str, list[float]] = {t: [] for t in tensors}
    samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}

    class Probe(OnnxModule):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            feed = self.call.feed(args, kwargs)
            values = self.session.run(self.call.output_names + tensors, feed)
            for name, value in zip(tensors, values[self.call.outputs:]):
                flat = value.reshape(-1)
                lows[name].append(float(flat.min()))
                highs[name].append(float(flat.max()))
                if observer == "percentile":
                    samples[name].append(flat[::max(1, flat.size // SAMPLE)].astype(np.float32))
            return self.call.rebuild(values[:self.call.outputs])

    runner = Probe(session, call)
    with torch.no_grad():
        for batch in batches:
            loss_fn(runner, batch)
    grids = {}
    for name in tensors:
        if not lows[name]:
            raise ProblemError(f"calibration never computed activation {name!r}", field="calibration")
        if observer == "minmax":
            low, high = min(lows[name]), max(highs[name])
        else:
            pooled = np.concatenate(samples[name])
            low, high = (float(v) for v in np.percentile(pooled, [PERCENTILE_TAIL, 100 - PERCENTILE_TAIL]))
        grids[name] = grid_for(name, low, high, bits)
    return grids


def insert_qdq(proto: "onnx.ModelProto", grids: Mapping[str, ActivationGrid]) -> None:
    """Put QuantizeLinear -> DequantizeLinear (uint8 or uint4 zero point) between each grid's tensor and its
    Conv/Gemm/MatMul consumers, in place."""
    from onnx import TensorProto, helper, numpy_helper

    consumers = {n.input[0]: [] for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.input}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input and node.input[0] in grids:
            consumers[node.input[0]].append(node)
    new_nodes, inits = {}, []
    for i, (name, grid) in enumerate(grids.items()):
        tag = f"activation.{i}"
        zero_type = TensorProto.UINT8 if grid.bits == 8 else TensorProto.UINT4
        inits += [numpy_helper.from_array(np.array(grid.scale, dtype=np.float32), f"{tag}.scale"),
                  helper.make_tensor(f"{tag}.zero_point", zero_type, [], [grid.zero_point])]
        new_nodes[name] = [helper.make_node("QuantizeLinear", [name, f"{tag}.scale", f"{tag}.zero_point"], [f"{tag}.q"],
                                            name=f"{tag}.quantize"),
                           helper.make_node("DequantizeLinear", [f"{tag}.q", f"{tag}.scale", f"{tag}.zero_point"],
                                            [f"{tag}.dq"], name=f"{tag}.dequantize")]
        for node in consumers[name]:
            node.input[0] = f"{tag}.dq"
    ordered = []
    for node in proto.graph.node:  # each pair right before its first consumer (after its producer)
        for inp in node.input:
            pair = None
            for name, nodes in new_nodes.items():
                if nodes[1].output[0] == inp:
                    pair = name
            if pair is not None:
                ordered += new_nodes.pop(pair)
        ordered.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(ordered)
    proto.graph.initializer.extend(inits)

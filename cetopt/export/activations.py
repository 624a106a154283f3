"""Static 8-bit activation quantisation of an exported graph: a QuantizeLinear/DequantizeLinear pair on the
activation input of every Conv, Gemm and MatMul whose weight is quantised, with one scale and zero point per
tensor calibrated on the spec's calibration batches (run through the graph itself in onnxruntime).

The grid and the observers are cetopt.quant.activations' (the same ones ``cetopt apply --activation-bits``
records in an artefact; an export of such an artefact reuses them: :func:`recorded_grids`). The grid is
asymmetric, uint8 at 8 bits or uint4 at 4 (the widths ONNX's QuantizeLinear has below 16). The weights keep
their own DequantizeLinear; the outputs of Conv/Gemm/MatMul stay float.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from cetopt.errors import ProblemError
from cetopt.export.call import ModelCall
from cetopt.quant.activations import ActivationGrid, RangeObserver, check_activation_options, grid_for

if TYPE_CHECKING:
    import onnx

__all__ = ["ActivationGrid", "activation_inputs", "calibrate", "grid_for", "insert_qdq", "recorded_grids"]


def _consumers(proto: "onnx.ModelProto") -> list[tuple[str, str]]:
    """(weight initializer, activation tensor) of each Conv/Gemm/MatMul, the weight seen through a Transpose."""
    transposed = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Transpose"}
    return [(transposed.get(n.input[1], n.input[1]), n.input[0]) for n in proto.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1]


def activation_inputs(proto: "onnx.ModelProto", weights: set[str]) -> list[str]:
    """Activation tensors to quantise: input 0 of each Conv/Gemm/MatMul whose weight (input 1, possibly through a
    Transpose) is one of ``weights`` (the planned layers' ``<layer>.weight`` tensors), in graph order."""
    seen, out = set(), []
    for weight, tensor in _consumers(proto):
        if weight in weights and tensor not in seen:
            seen.add(tensor)
            out.append(tensor)
    return out


def recorded_grids(proto: "onnx.ModelProto", layer_grids: Mapping[str, ActivationGrid]) -> dict[str, ActivationGrid]:
    """The grids an artefact records per layer (cetopt.quant.activations), keyed by the ONNX tensor each layer
    reads (input 0 of the Conv/Gemm/MatMul consuming ``<layer>.weight``), in graph order.

    Raises:
        ProblemError: a layer with a grid has no such consumer, or two layers reading one tensor record
            different grids (they observed the same values, so the artefact was edited).
    """
    from dataclasses import replace

    out: dict[str, ActivationGrid] = {}
    found: dict[str, str] = {}
    seen: set[str] = set()
    by_weight = {f"{layer}.weight": layer for layer in layer_grids}
    for weight, tensor in _consumers(proto):
        layer = by_weight.get(weight)
        if layer is None:
            continue
        seen.add(layer)
        grid = replace(layer_grids[layer], tensor=tensor)
        if tensor in out and out[tensor] != grid:
            raise ProblemError(f"layers {found[tensor]!r} and {layer!r} read the same tensor but record different "
                               "activation grids", field="activations")
        out.setdefault(tensor, grid)
        found.setdefault(tensor, layer)
    missing = [layer for layer in layer_grids if layer not in seen]
    if missing:
        raise ProblemError(f"layer {missing[0]!r} has a recorded activation grid but no Conv/Gemm/MatMul in the "
                           "exported graph reads its weight", field="activations")
    return out


def calibrate(proto: "onnx.ModelProto", call: ModelCall, loss_fn: Any, batches: Any, tensors: list[str], *,
              bits: int = 8, observer: str = "minmax", threads: int | None = None) -> dict[str, ActivationGrid]:
    """Run ``proto`` in onnxruntime through ``loss_fn`` on ``batches`` and fit each of ``tensors`` a grid.

    Raises:
        ProblemError: unknown observer, or bits other than 4 or 8.
    """
    import onnx

    from cetopt.export.onnx_eval import OnnxModule, onnx_session

    check_activation_options(bits, observer)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    session = onnx_session(probe.SerializeToString(), threads)
    observers = {t: RangeObserver(observer) for t in tensors}

    class Probe(OnnxModule):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            feed = self.call.feed(args, kwargs)
            values = self.session.run(self.call.output_names + tensors, feed)
            for name, value in zip(tensors, values[self.call.outputs:]):
                observers[name].add(value)
            return self.call.rebuild(values[:self.call.outputs])

    runner = Probe(session, call)
    with torch.no_grad():
        for batch in batches:
            loss_fn(runner, batch)
    return {name: grid_for(name, *observers[name].range(name), bits) for name in tensors}


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

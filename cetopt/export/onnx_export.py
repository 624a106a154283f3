"""ONNX export of an artefact written by ``cetopt apply``: the model as torch's exporter writes it, with each
planned layer's float weight replaced by its integer codes and a DequantizeLinear node.

The graph comes from ``torch.onnx.export`` of the unpacked model (TorchScript exporter, opset 20, no
constant folding: parameter names stay initializer names and BatchNorm stays unfolded, so every planned
weight is one initializer), lifted to opset 25 (INT2) by onnx's version converter. Then each planned layer's
initializer ``<layer>.weight`` is removed and the same name becomes the output of a small subgraph built
straight from the artefact's stored parts (:func:`cetopt.quant.pack.unpack_codes`, no requantisation):

- a grid part of b bits: codes as INT2 (b <= 2), INT4 (b <= 4), INT8 (b <= 8) or INT16 initializers
  (UINT2/4/8/16 on an asymmetric grid), signed ``code - (2^(b-1) - 1)`` on a symmetric grid (``2 code - 1`` at 1 bit), and
  ``DequantizeLinear(codes, scale, axis=0)`` with the per-row float32 scales (a scalar scale per tensor);
  an asymmetric grid adds its per-row offset with ``Add``;
- a K-term series: the K parts' DequantizeLinear outputs summed (``Sum``);
- rank r: ``MatMul`` of the two factors (dequantised, or float32 initializers), ``Reshape``-d to the weight.

A part with group scales (``group_size`` g: one scale per g inputs of a row) is a DequantizeLinear blocked along
the flattened inputs (``axis=1, block_size=g`` on the (rows, inputs) codes), then ``Reshape``-d to the weight.
Whatever consumes the weight (Conv, Gemm, MatMul, Gather) is untouched. A plain layer on a symmetric grid dequantises to exactly
the artefact's float32 weight (code x scale rounded once, as cetopt.quant.pack.decode then ``float()``);
series, low-rank and asymmetric layers are computed in float32 where the artefact sums in float64, so they
may differ in the last bits. :func:`export_onnx` checks both in onnxruntime before writing (``weight_error``).

ONNX's integer widths are 2, 4, 8 and 16 bits, so a 3-bit part is stored in INT4 and a 5- to 7-bit part in
INT8: :func:`container_padding` counts what that costs per bit-width. A plan drawn from container-exact
widths (``cetopt plan --bits 2,4,8``) exports with none.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import nn

from cetopt._atomic import atomic_write_bytes
from cetopt.errors import ProblemError
from cetopt.export.call import ModelCall, capture_call
from cetopt.export.format import (IR_VERSION, ONNX_FORMAT, OPSET, TORCH_OPSET, layer_subgraph, require_onnx,
                                  storage_name)
from cetopt.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


def torch_to_onnx(model: nn.Module, call: ModelCall) -> "onnx.ModelProto":
    """``model`` exported for ``call`` (inputs named after its forward's parameters, every dimension dynamic,
    outputs ``output_<i>``), at opset :data:`OPSET`, parameters as initializers under their own names."""
    import onnx
    from onnx import version_converter

    require_onnx()
    bound = call.signature.bind(*call.args, **call.kwargs).arguments
    dynamic = {k: {d: f"{k}_{d}" for d in range(bound[k].dim())} for k in call.inputs}
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model.eval(), call.args, buffer, kwargs=dict(call.kwargs) or None, dynamo=False,
                          opset_version=TORCH_OPSET, do_constant_folding=False, input_names=list(call.inputs),
                          output_names=call.output_names, dynamic_axes=dynamic, export_params=True,
                          keep_initializers_as_inputs=False)
    for warning in caught:
        log.info("torch.onnx.export: %s", str(warning.message).splitlines()[0])
    proto = onnx.load_from_string(buffer.getvalue())
    graph_inputs = [i.name for i in proto.graph.input]
    if graph_inputs != list(call.inputs):
        raise ProblemError(f"torch's exporter made inputs {graph_inputs} for the call's tensors {list(call.inputs)}",
                           field="inputs")
    proto = version_converter.convert_version(proto, OPSET)
    proto.ir_version = IR_VERSION
    return proto


def quantise_graph(proto: "onnx.ModelProto", tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any],
                   weights: Mapping[str, torch.Tensor], keys: Mapping[str, str] | None = None) -> dict[str, str]:
    """Replace each planned layer's float initializer in ``proto`` (in place) by its integer subgraph.

    Args:
        tensors, layout: the artefact's stored tensors and layouts (:func:`cetopt.artifact.read_packed`).
        weights: layer -> its unpacked weight: the initializer must hold exactly this (else the export named
            another tensor ``<layer>.weight``).
        keys: layer -> its initializer's name (default ``<layer>.weight``; cetopt.curvature.layers.weight_key).

    Returns:
        layer -> storage of its codes (``int4``, ``3 x int4``, ``rank 8 int8``, ...).
    """
    from onnx import numpy_helper

    graph = proto.graph
    initializers = {t.name: i for i, t in enumerate(graph.initializer)}
    nodes, inits, storage, drop = [], [], {}, set()
    for name, weight in weights.items():
        key = (keys or {}).get(name, f"{name}.weight")
        if key not in initializers:
            raise ProblemError(f"the exported graph has no initializer {key!r} (torch's exporter merged or renamed "
                               "it); this model cannot be exported with integer weights", field="layers")
        stored = numpy_helper.to_array(graph.initializer[initializers[key]])
        if not np.array_equal(stored, weight.detach().cpu().float().numpy()):
            raise ProblemError(f"initializer {key!r} of the exported graph is not layer {name!r}'s weight",
                               field="layers")
        n, i, storage[name] = layer_subgraph(tensors, layout[name], name, key)
        nodes += n
        inits += i
        drop.add(key)
    kept = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + inits)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)  # the subgraphs read initializers only: first is a valid order
    return storage


def weight_error(proto: "onnx.ModelProto", weights: Mapping[str, torch.Tensor],
                 names: Mapping[str, str] | None = None) -> dict[str, float]:
    """Layer -> max |ONNX weight - artefact weight| / max |artefact weight|, the ONNX weights computed by
    onnxruntime from ``proto``'s dequantisation subgraphs alone, unoptimised (0.0: bit-identical). ``names``:
    layer -> its weight tensor's name in the graph (default ``<layer>.weight``)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    names = {name: (names or {}).get(name, f"{name}.weight") for name in weights}
    keys = set(names.values())
    produced: set[str] = set(keys)
    nodes = []
    for node in reversed(proto.graph.node):  # the subgraphs: nodes feeding the weights, back to initializers
        if any(o in produced for o in node.output):
            nodes.append(node)
            produced.update(node.input)
    inits = [t for t in proto.graph.initializer if t.name in produced]
    outputs = [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, None) for k in sorted(keys)]
    small = helper.make_model(helper.make_graph(list(reversed(nodes)), "weights", [], outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph's own semantics
    session = ort.InferenceSession(small.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    values = dict(zip(sorted(keys), session.run(None, {})))
    out = {}
    for name, weight in weights.items():
        truth = weight.detach().cpu().float().numpy()
        got = values[names[name]]
        if got.shape != truth.shape:
            raise ProblemError(f"layer {name!r}: the ONNX weight has shape {got.shape}, the layer {truth.shape}",
                               field="layers")
        top = float(np.abs(truth).max())
        out[name] = float(np.abs(got.astype(np.float64) - truth).max() / top) if top > 0 else float(np.abs(got).max())
    return out


CONTAINER_BITS = (2, 4, 8, 16)  # ONNX's integer widths at opset 25


@dataclass(frozen=True)
class ContainerPadding:
    """The codes of one plan bit-width in the ONNX file vs bit-packed in the artefact.

    Attributes:
        bits: the plan's bit-width b.
        container: the ONNX type holding them (``int4``, ``uint8``, ...).
        values: how many codes.
        packed_bytes: their bit-packed size (sum over parts of ceil(values x b / 8)).
        onnx_bytes: their bytes in the ONNX file.
    """

    bits: int
    container: str
    values: int
    packed_bytes: int
    onnx_bytes: int

    @property
    def padding_bytes(self) -> int:
        """The bytes the wider container adds."""
        return self.onnx_bytes - self.packed_bytes

    @property
    def ratio(self) -> float:
        """onnx_bytes / packed_bytes."""
        return self.onnx_bytes / self.packed_bytes if self.packed_bytes else 1.0


def container_padding(proto: "onnx.ModelProto", layout: Mapping[str, Any]) -> dict[int, ContainerPadding]:
    """Plan bit-width -> what its codes take in ``proto`` against their bit-packed size, over every part of
    every planned layer in ``layout`` (cetopt.artifact.read_packed), sorted by bit-width."""
    sizes = {t.name: len(t.raw_data) if t.HasField("raw_data") else t.ByteSize() for t in proto.graph.initializer}
    rows: dict[int, list[int]] = {}
    containers: dict[int, str] = {}
    for name, entry in layout.items():
        for key, part in entry["parts"].items():
            bits, values = int(part["bits"]), math.prod(part["shape"])
            row = rows.setdefault(bits, [0, 0, 0])
            row[0] += values
            row[1] += -(-values * bits // 8)
            row[2] += sizes[f"{name}.weight.{key}.codes"]
            containers.setdefault(bits, storage_name(bits, bool(part["symmetric"])))
    return {b: ContainerPadding(bits=b, container=containers[b], values=v, packed_bytes=pk, onnx_bytes=ob)
            for b, (v, pk, ob) in sorted(rows.items())}


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        file_bytes: its size.
        code_bytes: bytes of the integer code initializers (INT4 packs two codes a byte).
        scale_bytes: bytes of the float32 scales and offsets.
        other_bytes: bytes of every other initializer (float parameters, buffers, low-rank float factors,
            shapes and constants the exporter wrote).
        packed_bytes: the artefact's packed size (cetopt.quant.pack), for comparison.
        storage: layer -> how its codes are stored (``int4``, ``2 x int8``, ``rank 8 int8``, ...).
        weight_error: layer -> max |ONNX weight - artefact weight| / max |artefact weight| (0.0: identical).
        activations: activation tensor -> its calibrated grid (cetopt.export.activations; empty: weights only).
        activation_source: where those grids come from: "artifact" (recorded by ``cetopt apply
            --activation-bits``, reused), "onnxruntime" (calibrated here), "" (weights only).
        padding: plan bit-width -> its codes' ONNX bytes vs bit-packed bytes (:func:`container_padding`).
    """

    path: Path
    file_bytes: int
    code_bytes: int
    scale_bytes: int
    other_bytes: int
    packed_bytes: int
    storage: Mapping[str, str]
    weight_error: Mapping[str, float]
    activations: Mapping[str, Any] = field(default_factory=dict)
    activation_source: str = ""
    padding: Mapping[int, ContainerPadding] = field(default_factory=dict)

    @property
    def padding_bytes(self) -> int:
        """What ONNX's wider integer containers add to the codes, over every bit-width."""
        return sum(p.padding_bytes for p in self.padding.values())

    @property
    def overhead_bytes(self) -> int:
        """Container overhead: the file less its initializers' data (graph, names, protobuf framing)."""
        return self.file_bytes - self.code_bytes - self.scale_bytes - self.other_bytes


def _initializer_bytes(proto: "onnx.ModelProto") -> tuple[int, int, int]:
    """(code, scale/offset, other) bytes of the initializers' data."""
    code = scale = other = 0
    for t in proto.graph.initializer:
        size = len(t.raw_data) if t.HasField("raw_data") else t.ByteSize()
        if t.name.endswith(".codes"):
            code += size
        elif t.name.endswith((".scale", ".offset")) and ".weight." in t.name:
            scale += size
        else:
            other += size
    return code, scale, other


def export_onnx(directory: str | os.PathLike[str], spec: ModelSpec, out: str | os.PathLike[str], *,
                activation_bits: int | None = None, observer: str = "minmax") -> OnnxExport:
    """Export the artefact DIR of ``spec``'s model as ONNX with integer weights (see the module docstring),
    check it (onnx.checker, the planned weights in onnxruntime) and write it to ``out`` atomically.

    Args:
        activation_bits: also quantise the activation input of every quantised Conv/Gemm/MatMul to this many
            bits (4 or 8; per tensor, static), calibrated on the spec's calibration batches in onnxruntime
            (:mod:`cetopt.export.activations`); None: weights only. An artefact that records activation grids
            (``cetopt apply --activation-bits``) is exported with those grids, whatever this says, unless
            it asks for other bits or another observer (then a ProblemError).
        observer: the calibration's range: "minmax" or "percentile".

    Raises:
        ProblemError: DIR is not an artefact of ``spec.model``'s weights, the exporter renamed a planned
            weight, or a plain symmetric layer does not dequantise to exactly the artefact's weight.
    """
    import onnx
    from onnx import helper

    from cetopt.artifact import load_compressed, read_packed, state_fingerprint

    require_onnx()
    from cetopt.quant.fold import folded_if_planned

    loaded = load_compressed(directory, spec)
    spec = folded_if_planned(spec, loaded.plan.extra)  # BatchNorms folded before the plan was made
    if loaded.manifest.get("source_fingerprint") != state_fingerprint(spec.model):
        raise ProblemError(f"{directory} was made from other weights than those of {spec.name!r} (fingerprints "
                           "differ); export it with the --model it was applied to", field="model")
    call = capture_call(loaded.model, spec.loss_fn, spec.calibration[0])
    proto = torch_to_onnx(loaded.model, call)
    tensors, layout = read_packed(directory)
    from cetopt.curvature.layers import weight_key

    keys = {name: weight_key(spec.model, name) for name in loaded.weights}
    storage = quantise_graph(proto, tensors, layout, loaded.weights, keys)
    errors = weight_error(proto, loaded.weights, keys)
    _check_exact(loaded.plan, errors)
    recorded = loaded.manifest.get("activations")
    if recorded is not None:
        if (activation_bits, observer) not in ((None, observer), (recorded["bits"], recorded["observer"])):
            raise ProblemError(f"{directory} records {recorded['bits']}-bit activations ({recorded['observer']}); "
                               f"export them as they are (no --activation-bits) or apply the plan again with "
                               f"--activation-bits {activation_bits} --observer {observer}", field="--activation-bits")
        activation_bits, observer = recorded["bits"], recorded["observer"]
    grids, source = _quantise_activations(proto, loaded, spec, call, set(keys.values()), activation_bits, observer)
    m = loaded.manifest
    helper.set_model_props(proto, {f"cetopt.{k}": str(v) for k, v in _provenance(
        spec, directory, m, source, activation_bits, observer).items()})
    proto.producer_name = "cetopt"
    onnx.checker.check_model(proto, full_check=True)
    blob = proto.SerializeToString()
    path = atomic_write_bytes(out, blob)
    code, scale, other = _initializer_bytes(proto)
    return OnnxExport(path=path, file_bytes=len(blob), code_bytes=code, scale_bytes=scale, other_bytes=other,
                      packed_bytes=-(-int(m["packed_bits"]) // 8), storage=storage, weight_error=errors,
                      activations=grids, activation_source=source, padding=container_padding(proto, layout))



def _check_exact(plan: Any, errors: Mapping[str, float]) -> None:
    """A plain symmetric layer (no low rank, one term) must dequantise to exactly the artefact's weight."""
    for name, choice in plan.layers.items():
        exact = choice.rank is None and choice.terms == 1 and plan.quantizer_of(name).symmetric
        if exact and errors[name] != 0.0:
            raise ProblemError(f"layer {name!r}: the ONNX weight differs from the artefact's by {errors[name]:.3g} "
                               "(relative); a plain symmetric layer must match exactly", field="layers")


def _quantise_activations(proto: "onnx.ModelProto", loaded: Any, spec: ModelSpec, call: ModelCall,
                          weights: set[str], bits: int | None, observer: str) -> tuple[dict[str, Any], str]:
    """Insert QuantizeLinear/DequantizeLinear pairs on the activation inputs: with the artefact's recorded grids
    when it has them, else calibrated in onnxruntime when ``bits`` is given; returns the grids and their source
    ("artifact", "onnxruntime", or "" for weights only)."""
    from cetopt.export.activations import activation_inputs, calibrate, insert_qdq, recorded_grids

    if loaded.manifest.get("activations") is not None:
        grids, source = recorded_grids(proto, loaded.activations), "artifact"
    elif bits is not None:
        names = activation_inputs(proto, weights)
        grids = calibrate(proto, call, spec.loss_fn, spec.calibration, names, bits=bits, observer=observer)
        source = "onnxruntime"
    else:
        return {}, ""
    insert_qdq(proto, grids)
    return grids, source


def _provenance(spec: ModelSpec, directory: str | os.PathLike[str], manifest: Mapping[str, Any], source: str,
                activation_bits: int | None, observer: str) -> dict[str, str]:
    """The ONNX model's ``cetopt.*`` properties: format, model, the artefact and its fingerprints, the packed size
    and how activations were quantised."""
    m = manifest
    return {"format": ONNX_FORMAT, "model": spec.name, "artifact": str(Path(directory).resolve()),
            "artifact_weights_sha256": m["weights_sha256"], "source_fingerprint": m["source_fingerprint"],
            "plan_sha256": m["plan_sha256"], "packed_bits": str(m["packed_bits"]),
            "activation_bits": str(activation_bits or ""), "observer": observer if activation_bits else "",
            "activation_source": source}

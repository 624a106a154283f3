"""An exported ONNX file run in onnxruntime as if it were the spec's torch model: :class:`OnnxModule` is an
``nn.Module`` whose forward feeds the call's tensors to an onnxruntime session and returns its outputs in the
model's own structure, so the spec's ``evaluate`` and ``loss_fn`` measure it on their own data, unchanged.
:func:`evaluate_onnx` reports those metrics beside the unpacked torch artefact's, and how far the ONNX
outputs are from the torch artefact's on every call the evaluation makes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from cetopt.errors import ProblemError
from cetopt.export.call import ModelCall, capture_call
from cetopt.export.format import ONNX_FORMAT, require_onnx
from cetopt.modelspec import ModelSpec


MATMUL_ACCURACY = "session.qdq_matmulnbits_accuracy_level"  # onnxruntime's session option


def onnx_session(path: str | os.PathLike[str] | bytes, threads: int | None = None, *, int8_matmul: bool = False,
                 fold_weights: bool = False) -> Any:
    """An onnxruntime CPU session of ``path`` (or a serialised model; ``threads`` intra-op threads, default
    torch's count).

    onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits, and by default (accuracy level 4) quantises
    that MatMul's input to int8 on the fly: outputs move by ~1e-3 relative. Here the fused MatMul computes
    in float32 (level 1) unless ``int8_matmul``, so the file computes what the torch artefact computes.
    Other weights' DequantizeLinear runs on every call; ``fold_weights`` (onnxruntime's
    ``session.disable_quant_qdq``) dequantises them once at load instead (float weights in memory).
    """
    import onnxruntime as ort

    require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry(MATMUL_ACCURACY, "4" if int8_matmul else "1")
    if fold_weights:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile classes
        where = "the model" if isinstance(path, bytes) else path
        raise ProblemError(f"onnxruntime cannot load {where}: {str(err).splitlines()[0]}", field="model") from None


@dataclass
class OutputGap:
    """Running max of ONNX vs torch outputs over calls: |onnx - torch|_max / |torch|_max per output tensor."""

    relative: float = 0.0
    calls: int = 0
    rows: int = 0
    argmax_equal: int = 0

    def add(self, onnx_out: Any, torch_out: Any) -> None:
        for got, want in zip(pytree.tree_leaves(onnx_out), pytree.tree_leaves(torch_out)):
            want = want.detach().float()
            top = float(want.abs().max()) if want.numel() else 0.0
            gap = float((got.float() - want).abs().max()) if want.numel() else 0.0
            self.relative = max(self.relative, gap / top if top > 0 else gap)
        first, ref = pytree.tree_leaves(onnx_out)[0], pytree.tree_leaves(torch_out)[0]
        if ref.dim() >= 2:  # rows whose largest entry (a classifier's top-1) is the same
            self.rows += ref.numel() // ref.shape[-1]
            self.argmax_equal += int((first.argmax(-1) == ref.argmax(-1)).sum())
        self.calls += 1


class OnnxModule(nn.Module):
    """An ONNX file as an ``nn.Module`` for ``call``'s signature (inference only; outputs are torch tensors).

    Args:
        session: an onnxruntime session of the file (:func:`onnx_session`).
        call: how the model is called (cetopt.export.call.capture_call on the torch model).
        reference: a torch model run on every call too; ``gap`` tracks how far the ONNX outputs are from it.
    """

    def __init__(self, session: Any, call: ModelCall, reference: nn.Module | None = None) -> None:
        super().__init__()
        self.session, self.call, self.reference = session, call, reference
        self.gap = OutputGap()
        self.seconds = 0.0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        import time

        feed = self.call.feed(args, kwargs)
        start = time.perf_counter()
        outputs = self.session.run(self.call.output_names, feed)
        self.seconds += time.perf_counter() - start
        result = self.call.rebuild(outputs)
        if self.reference is not None:
            with torch.no_grad():
                self.gap.add(result, self.reference(*args, **kwargs))
        return result


def onnx_props(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``cetopt.*`` metadata of an ONNX file written by cetopt export (checked: format)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, OSError
        raise ProblemError(f"{path} is not an ONNX file ({str(err).splitlines()[0] if str(err) else err!r})",
                           field="model") from None
    props = {p.key.removeprefix("cetopt."): p.value for p in proto.metadata_props if p.key.startswith("cetopt.")}
    if props.get("format") != ONNX_FORMAT:
        raise ProblemError(f"{path} was not written by `cetopt export` (no {ONNX_FORMAT} metadata)", field="model")
    return props


@dataclass(frozen=True)
class OnnxReport:
    """:func:`evaluate_onnx`'s result.

    Attributes:
        metrics: the spec's metrics of the ONNX model run in onnxruntime (first key: the headline).
        artifact_metrics: the same metrics of the unpacked torch artefact (its inputs fake-quantised when the
            file reuses the artefact's activation grids).
        fp_metrics: the same metrics of the FP32 model.
        calibration_dloss: mean calibration loss of the ONNX model minus the FP32 model's.
        max_relative_error: max over calls and outputs of |onnx - torch| / max |torch| against the unpacked
            torch artefact, on the calls the spec's ``evaluate`` makes (its test data; the calibration batches
            when the spec has no evaluation).
        argmax_agreement: fraction of output rows (last dimension) whose argmax is the torch artefact's.
        compared_calls: how many calls that compares.
        onnx_seconds: time spent inside onnxruntime over all those calls.
        file_bytes, packed_bytes: the ONNX file's size and the artefact's packed size.
        int8_matmul: whether onnxruntime quantised fused MatMul inputs to int8 (:func:`onnx_session`).
    """

    model: str
    metrics: dict[str, float]
    artifact_metrics: dict[str, float]
    fp_metrics: dict[str, float]
    calibration_dloss: float
    max_relative_error: float
    argmax_agreement: float | None
    compared_calls: int
    onnx_seconds: float
    file_bytes: int
    packed_bytes: int
    int8_matmul: bool = False

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def evaluate_onnx(path: str | os.PathLike[str], spec: ModelSpec, *, artifact: str | os.PathLike[str] | None = None,
                  threads: int | None = None, int8_matmul: bool = False) -> OnnxReport:
    """Run the ONNX file at ``path`` in onnxruntime on ``spec``'s test data (its ``evaluate``) and calibration
    batches (its ``loss_fn``), next to the unpacked torch artefact it was exported from.

    Args:
        artifact: the artefact DIR (default: the one recorded in the file); its weights must be the ones
            the file was exported from (SHA-256), and it must be an artefact of ``spec.model``.
        int8_matmul: let onnxruntime quantise fused MatMul inputs to int8 (:func:`onnx_session`).

    Raises:
        ProblemError: not a cetopt ONNX file, the artefact moved or changed, or another model's file.
    """
    from cetopt.artifact import file_sha256, load_compressed, state_fingerprint, WEIGHTS_FILE

    props = onnx_props(path)
    directory = Path(artifact or props.get("artifact", ""))
    if not (directory / WEIGHTS_FILE).is_file():
        raise ProblemError(f"the artefact {path} was exported from ({directory}) is not there; pass --artifact DIR",
                           field="--artifact")
    if file_sha256(directory / WEIGHTS_FILE) != props.get("artifact_weights_sha256"):
        raise ProblemError(f"{directory} holds other weights than those {path} was exported from (SHA-256 differs)",
                           field="--artifact")
    from cetopt.artifact import PLAN_FILE
    from cetopt.quant.fold import folded_if_planned
    from cetopt.quant.plan import Plan

    spec = folded_if_planned(spec, Plan.load(directory / PLAN_FILE).extra)  # BatchNorms folded before planning
    if props.get("source_fingerprint") != state_fingerprint(spec.model):
        raise ProblemError(f"{path} was exported from other weights than those of {spec.name!r} (fingerprints "
                           "differ); evaluate it with the --model it was made from", field="--model")
    from contextlib import nullcontext

    from cetopt.quant.activations import fake_quantised_inputs

    loaded = load_compressed(directory, spec)
    call = capture_call(loaded.model, spec.loss_fn, spec.calibration[0])
    # grids reused from the artefact: the torch reference quantises the same inputs the same way
    same_grids = props.get("activation_source") == "artifact" and loaded.activations
    with fake_quantised_inputs(loaded.model, loaded.activations) if same_grids else nullcontext():
        runner = OnnxModule(onnx_session(path, threads, int8_matmul=int8_matmul), call, reference=loaded.model)
        metrics = spec.metrics(runner)
        if runner.gap.calls:  # compared on the test data; else on the calibration batches below
            runner.reference = None
        with torch.no_grad():
            onnx_loss = float(np.mean([float(spec.loss_fn(runner, b)) for b in spec.calibration]))
            fp_loss = float(np.mean([float(spec.loss_fn(spec.model, b)) for b in spec.calibration]))
        artifact_metrics = spec.metrics(loaded.model)
    gap = runner.gap
    return OnnxReport(model=spec.name, metrics=metrics, artifact_metrics=artifact_metrics,
                      fp_metrics=spec.metrics(), calibration_dloss=onnx_loss - fp_loss,
                      max_relative_error=gap.relative,
                      argmax_agreement=gap.argmax_equal / gap.rows if gap.rows else None, compared_calls=gap.calls,
                      onnx_seconds=runner.seconds, file_bytes=Path(path).stat().st_size,
                      packed_bytes=-(-int(props.get("packed_bits", 0)) // 8), int8_matmul=int8_matmul)

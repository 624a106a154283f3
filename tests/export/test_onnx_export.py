"""ONNX export of artefacts: integer initializers with DequantizeLinear feeding the original consumers, weights
equal to the artefact's (checked here with numpy from the file's own initializers), outputs equal to the
unpacked torch model's in onnxruntime, sizes accounted for, and foreign or malformed inputs refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

from onnx import numpy_helper  # noqa: E402
from test_artifact import PLANS, signed, small_spec  # noqa: E402

from cetopt.artifact import load_compressed, write_artifact  # noqa: E402
from cetopt.errors import ProblemError  # noqa: E402
from cetopt.export.onnx_eval import evaluate_onnx  # noqa: E402
from cetopt.export.onnx_export import export_onnx  # noqa: E402
from cetopt.modelspec import ModelSpec  # noqa: E402
from cetopt.quant.plan import Plan  # noqa: E402
from cetopt.quant.quantizers import QuantizerSpec  # noqa: E402


class Tagger(nn.Module):
    """Embedding -> Linear on (batch, tokens, dim) -> mean over tokens -> Linear: Gather and MatMul consumers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mix, self.head = nn.Embedding(20, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.mix(self.embed(ids))) * mask.unsqueeze(-1)
        return self.head(hidden.sum(1) / mask.sum(1, keepdim=True))


def tagger_spec() -> ModelSpec:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    ids, mask, y = torch.randint(0, 20, (12, 5), generator=g), torch.ones(12, 5), torch.randint(0, 3, (12,), generator=g)
    mask[::3, 3:] = 0
    return ModelSpec(name="tagger", model=Tagger().eval(), calibration=[(ids[:6], mask[:6], y[:6]), (ids[6:], mask[6:], y[6:])],
                     loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0], b[1]), b[2]))


def graph_parts(path: Path) -> tuple[dict[str, np.ndarray], dict[str, onnx.NodeProto], dict[str, list[str]]]:
    """(initializers, producer of each tensor, consumers' op types of each tensor) of an ONNX file."""
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node.op_type)
    return inits, producer, consumers


@pytest.mark.parametrize("name", sorted(PLANS))
def test_export_matches_the_artefact(tmp_path: Path, name: str) -> None:
    spec, plan = small_spec(), PLANS[name]
    write_artifact(spec, signed(plan, spec), tmp_path / "art")
    info = export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    loaded = load_compressed(tmp_path / "art", spec)
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 25
    inits, producer, consumers = graph_parts(tmp_path / "m.onnx")
    for layer, choice in plan.layers.items():
        key = f"{layer}.weight"
        assert key not in inits and set(consumers[key]) <= {"Conv", "Gemm", "MatMul", "Gather"}
        if choice.rank is None and choice.terms == 1:  # plain: one DequantizeLinear of integer codes
            codes, scale = inits[f"{key}.t0.codes"], inits[f"{key}.t0.scale"]
            symmetric = plan.quantizer_of(layer).symmetric
            assert producer[key].op_type == ("DequantizeLinear" if symmetric else "Add")  # Add: the row offsets
            want = "int4" if choice.bits <= 4 else "int8"
            assert str(codes.dtype).startswith(want if plan.quantizer_of(layer).symmetric else "u" + want)
            if plan.quantizer_of(layer).symmetric:  # numpy dequantisation of the file: exactly the artefact's
                rows = scale.reshape((-1,) + (1,) * (codes.ndim - 1))
                np.testing.assert_array_equal(codes.astype(np.float32) * rows, loaded.weights[layer].numpy())
                assert info.weight_error[layer] == 0.0
        else:
            assert info.weight_error[layer] < 1e-6
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))  # another batch size than the export's
    with torch.no_grad():
        want = loaded.model(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert info.file_bytes == (tmp_path / "m.onnx").stat().st_size
    assert info.code_bytes + info.scale_bytes + info.other_bytes + info.overhead_bytes == info.file_bytes


def test_code_bytes_are_packed_nibbles_and_bytes(tmp_path: Path) -> None:
    spec = small_spec()
    plan = Plan(bits={"0": 3, "4": 6})
    write_artifact(spec, signed(plan, spec), tmp_path / "art")
    info = export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    sizes = {n: m.weight.numel() for n, m in spec.model.named_modules() if n in plan.layers}
    assert info.storage == {"0": "int4", "4": "int8"}
    assert info.code_bytes == math.ceil(sizes["0"] / 2) + sizes["4"]
    assert info.scale_bytes == 4 * (8 + 10)  # one float32 scale per output channel


def test_embeddings_and_matmul_consumers(tmp_path: Path) -> None:
    spec = tagger_spec()
    plan = Plan(bits={"embed": 4, "mix": 8, "head": 2}, quantizer=QuantizerSpec(symmetric=True))
    write_artifact(spec, signed(plan, spec), tmp_path / "art")
    export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    _, _, consumers = graph_parts(tmp_path / "m.onnx")
    assert "Gather" in consumers["embed.weight"]
    report = evaluate_onnx(tmp_path / "m.onnx", spec)
    assert report.compared_calls == len(spec.calibration) and report.max_relative_error <= 1e-5
    # onnxruntime's default for a fused DequantizeLinear + MatMul quantises its input to int8: asked for, it shows
    assert evaluate_onnx(tmp_path / "m.onnx", spec, int8_matmul=True).max_relative_error > 1e-4
    loaded = load_compressed(tmp_path / "art", spec)
    with torch.no_grad():  # independent: the calibration loss of the torch artefact, computed here
        base = np.mean([float(spec.loss_fn(spec.model, b)) for b in spec.calibration])
        quant = np.mean([float(spec.loss_fn(loaded.model, b)) for b in spec.calibration])
    assert report.calibration_dloss == pytest.approx(quant - base, abs=1e-5)


def test_evaluate_reports_the_spec_metric(tmp_path: Path) -> None:
    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "art")
    export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    report = evaluate_onnx(tmp_path / "m.onnx", spec)
    assert report.metrics == report.artifact_metrics and report.fp_metrics == {"agreement": 1.0}
    assert report.max_relative_error <= 1e-5 and report.argmax_agreement == 1.0


def test_foreign_moved_or_malformed_inputs_are_refused(tmp_path: Path) -> None:
    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "art")
    with pytest.raises(ProblemError, match="fingerprints differ"):
        export_onnx(tmp_path / "art", small_spec(seed=1), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    with pytest.raises(ProblemError, match="fingerprints differ"):
        evaluate_onnx(tmp_path / "m.onnx", small_spec(seed=1))
    (tmp_path / "art").rename(tmp_path / "moved")
    with pytest.raises(ProblemError, match="--artifact"):
        evaluate_onnx(tmp_path / "m.onnx", spec)
    assert evaluate_onnx(tmp_path / "m.onnx", spec, artifact=tmp_path / "moved").max_relative_error <= 1e-5
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ProblemError, match="not an ONNX file|not written by"):
        evaluate_onnx(tmp_path / "junk.onnx", spec)


def test_cli_export_and_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from cetopt.cli import main

    (tmp_path / "small_model.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_artifact import small_spec\n\ndef spec():\n    return small_spec()\n"
        % str(Path(__file__).parents[1]))
    signed(PLANS["mixed"], small_spec()).save(tmp_path / "plan.json")
    monkeypatch.chdir(tmp_path)
    assert main(["apply", "plan.json", "--model", "small_model.py:spec", "--out", "art"]) == 0
    assert main(["export", "art", "--model", "small_model.py:spec", "--format", "onnx", "--out", "m.onnx"]) == 0
    out = capsys.readouterr().out
    assert "container overhead" in out and "1 uint8" in out  # layer 0: 6 bits on an asymmetric grid
    assert main(["evaluate", "m.onnx", "--model", "small_model.py:spec", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == report["artifact_metrics"] and report["max_relative_error"] <= 1e-5
    assert main(["evaluate", "m.onnx"]) == 2 and "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --model is required
        main(["export", "art", "--out", "x.onnx"])


def test_group_scales_export_as_blocked_dequantize_linear(tmp_path: Path) -> None:
    """Group scales (one per 8 inputs of a row; the conv's 27 inputs end in a short block) become DequantizeLinear
    blocked along the flattened inputs, dequantising to exactly the artefact's weights; an asymmetric grid with
    group scales (a float offset per group) is refused by name."""
    spec = small_spec()
    plan = Plan(bits={"0": 4, "4": 3}, quantizer=QuantizerSpec(group_size=8))
    write_artifact(spec, signed(plan, spec), tmp_path / "art")
    info = export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
    inits, producer, _ = graph_parts(tmp_path / "m.onnx")
    assert inits["0.weight.t0.scale"].shape == (8, 4) and inits["4.weight.t0.scale"].shape == (10, 36)
    blocked = producer["0.weight.t0.blocks"]
    assert blocked.op_type == "DequantizeLinear" and {a.name: a.i for a in blocked.attribute}["block_size"] == 8
    assert set(info.weight_error.values()) == {0.0}
    loaded = load_compressed(tmp_path / "art", spec)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = loaded.model(x).numpy()
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    asymmetric = Plan(bits={"0": 4, "4": 3}, quantizer=QuantizerSpec(symmetric=False, group_size=8))
    write_artifact(spec, signed(asymmetric, spec), tmp_path / "asym")
    with pytest.raises(ProblemError, match="group"):
        export_onnx(tmp_path / "asym", spec, tmp_path / "a.onnx")


def test_attention_projection_parameter(tmp_path: Path) -> None:
    """nn.MultiheadAttention's bare in_proj_weight, planned: its initializer (named after the Parameter itself,
    not ``<layer>.weight``) becomes the dequantisation subgraph, bit-identical, outputs as the torch artefact's."""
    from test_attention_layers import attention_spec

    spec = attention_spec(2)
    plan = Plan(bits={"inp": 8, "attn.in_proj_weight": 4, "attn.out_proj": 4, "head": 8})
    write_artifact(spec, signed(plan, spec), tmp_path / "art")
    info = export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    inits, _, consumers = graph_parts(tmp_path / "m.onnx")
    assert "attn.in_proj_weight" not in inits and consumers["attn.in_proj_weight"]
    assert inits["attn.in_proj_weight.weight.t0.codes"].shape == (24, 8)
    assert info.storage["attn.in_proj_weight"] == "int4"


@pytest.mark.parametrize("symmetric", [True, False])
def test_two_bit_codes_are_int2_and_the_padding_is_counted(tmp_path: Path, symmetric: bool) -> None:
    """2-bit codes take INT2 (UINT2 on an asymmetric grid, opset 25), four a byte, and dequantise exactly;
    3- and 6-bit codes are padded to INT4 / INT8, which container_padding counts against ceil(n b / 8)."""
    from cetopt.quant.quantizers import QuantizerSpec

    spec = small_spec()
    sizes = {n: m.weight.numel() for n, m in spec.model.named_modules() if n in ("0", "4")}
    for bits, (want_type, width) in {(2, 3): (("int2", "int4"), (2, 4)), (3, 6): (("int4", "int8"), (4, 8))}.items():
        plan = Plan(bits={"0": bits[0], "4": bits[1]}, quantizer=QuantizerSpec(symmetric=symmetric))
        art = tmp_path / f"art{bits[0]}"
        write_artifact(spec, signed(plan, spec), art)
        info = export_onnx(art, spec, tmp_path / f"m{bits[0]}.onnx")
        prefix = "" if symmetric else "u"
        assert info.storage == {"0": prefix + want_type[0], "4": prefix + want_type[1]}
        for layer, b, w in (("0", bits[0], width[0]), ("4", bits[1], width[1])):
            pad = info.padding[b]
            assert (pad.values, pad.container) == (sizes[layer], prefix + want_type[layer == "4"])
            assert pad.packed_bytes == math.ceil(sizes[layer] * b / 8) and pad.onnx_bytes == math.ceil(sizes[layer] * w / 8)
        assert info.padding_bytes == sum(math.ceil(sizes[n] * w / 8) - math.ceil(sizes[n] * b / 8)
                                         for n, b, w in (("0", bits[0], width[0]), ("4", bits[1], width[1])))
        inits, _, _ = graph_parts(tmp_path / f"m{bits[0]}.onnx")
        if bits[0] == 2 and symmetric:  # the codes -1, 0, 1 and the scales give the artefact's weight exactly
            codes = inits["0.weight.t0.codes"].astype(np.float32)
            assert set(np.unique(codes)) <= {-1.0, 0.0, 1.0}
            loaded = load_compressed(art, spec)
            np.testing.assert_array_equal(codes * inits["0.weight.t0.scale"].reshape(-1, 1, 1, 1),
                                          loaded.weights["0"].numpy())
        assert max(info.weight_error.values()) < 1e-6
    assert info.padding_bytes > 0 and all(p.padding_bytes == 0 for p in export_onnx(
        tmp_path / "art2", spec, tmp_path / "again.onnx").padding.values() if p.bits == 2)


def test_recorded_activations_on_embeddings_and_matmuls(tmp_path: Path) -> None:
    """apply --activation-bits on a model with an Embedding (integer input: no grid) and a Linear on 3-d input
    (a MatMul in ONNX): the export carries one Q/DQ pair per Linear, and runs what the torch artefact runs."""
    spec = tagger_spec()
    plan = Plan(bits={"embed": 4, "mix": 8, "head": 2}, quantizer=QuantizerSpec(symmetric=True))
    write_artifact(spec, signed(plan, spec), tmp_path / "art", activation_bits=8)
    loaded = load_compressed(tmp_path / "art", spec)
    assert sorted(loaded.activations) == ["head", "mix"]
    info = export_onnx(tmp_path / "art", spec, tmp_path / "m.onnx")
    assert info.activation_source == "artifact" and len(info.activations) == 2
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / "m.onnx")).graph.node) == 2
    report = evaluate_onnx(tmp_path / "m.onnx", spec)
    assert report.compared_calls == len(spec.calibration) and report.max_relative_error <= 1e-5

"""Static activation quantisation in the ONNX export: one QuantizeLinear/DequantizeLinear pair per quantised
layer's input, ranges equal to those seen by torch hooks on the calibration batches, and onnxruntime's outputs
equal to a torch model that fake-quantises those inputs the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

from test_artifact import PLANS, signed, small_spec  # noqa: E402

from cetopt.artifact import load_compressed, write_artifact  # noqa: E402
from cetopt.errors import ProblemError  # noqa: E402
from cetopt.export.activations import grid_for  # noqa: E402
from cetopt.export.onnx_eval import evaluate_onnx, onnx_session  # noqa: E402
from cetopt.export.onnx_export import export_onnx  # noqa: E402


def input_ranges(model: torch.nn.Module, layers: list[str], batches: list) -> dict[str, tuple[float, float]]:
    """Min and max of each layer's input over the batches, by forward pre-hooks (independent of the export)."""
    seen: dict[str, list[float]] = {n: [np.inf, -np.inf] for n in layers}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_pre_hook(
        lambda _m, args, n=n: seen[n].__setitem__(slice(None), [min(seen[n][0], float(args[0].min())),
                                                                max(seen[n][1], float(args[0].max()))]))
        for n in layers]
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for h in hooks:
        h.remove()
    return {n: (lo, hi) for n, (lo, hi) in seen.items()}


def test_minmax_activations_match_a_fake_quantised_torch_model(tmp_path: Path) -> None:
    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "art")
    info = export_onnx(tmp_path / "art", spec, tmp_path / "a8.onnx", activation_bits=8)
    model = onnx.load(str(tmp_path / "a8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 2 == len(info.activations)
    loaded = load_compressed(tmp_path / "art", spec).model
    ranges = input_ranges(loaded, ["0", "4"], spec.calibration)
    grids = {name: grid_for(name, *ranges[name], 8) for name in ranges}
    assert sorted((g.scale, g.zero_point) for g in info.activations.values()) == \
        sorted((g.scale, g.zero_point) for g in grids.values())

    def fake(module: torch.nn.Module, args: tuple, name: str) -> tuple:
        g = grids[name]
        q = torch.clamp(torch.round(args[0] / g.scale) + g.zero_point, 0, 255)
        return ((q - g.zero_point) * g.scale,)

    modules = dict(loaded.named_modules())
    for name in grids:
        modules[name].register_forward_pre_hook(lambda m, a, name=name: fake(m, a, name))
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = loaded(x).numpy()
    got = onnx_session(tmp_path / "a8.onnx").run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_percentile_ranges_are_inside_minmax_and_errors_are_named(tmp_path: Path) -> None:
    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "art")
    mm = export_onnx(tmp_path / "art", spec, tmp_path / "mm.onnx", activation_bits=8)
    pc = export_onnx(tmp_path / "art", spec, tmp_path / "pc.onnx", activation_bits=8, observer="percentile")
    for name, grid in pc.activations.items():
        assert mm.activations[name].low <= grid.low <= grid.high <= mm.activations[name].high
    report = evaluate_onnx(tmp_path / "pc.onnx", spec)
    assert 0 < report.max_relative_error < 0.1  # activations rounded: close to, not equal to, the torch artefact
    with pytest.raises(ProblemError, match="observer"):
        export_onnx(tmp_path / "art", spec, tmp_path / "x.onnx", activation_bits=8, observer="mse")
    with pytest.raises(ProblemError, match="4 or 8"):
        export_onnx(tmp_path / "art", spec, tmp_path / "x.onnx", activation_bits=6)


def test_export_reuses_the_grids_apply_recorded(tmp_path: Path) -> None:
    """An artefact applied with --activation-bits exports with its own grids (no recalibration), and the ONNX
    file computes what the artefact evaluates: the torch model with the same inputs fake-quantised."""
    from cetopt.quant.activations import fake_quantised_inputs

    spec = small_spec()
    write_artifact(spec, signed(PLANS["plain"], spec), tmp_path / "art", activation_bits=8, observer="percentile")
    loaded = load_compressed(tmp_path / "art", spec)
    info = export_onnx(tmp_path / "art", spec, tmp_path / "a8.onnx")
    assert info.activation_source == "artifact"
    assert sorted((g.scale, g.zero_point, g.bits) for g in info.activations.values()) == \
        sorted((g.scale, g.zero_point, g.bits) for g in loaded.activations.values())
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), fake_quantised_inputs(loaded.model, loaded.activations):
        want = loaded.model(x).numpy()
    got = onnx_session(tmp_path / "a8.onnx").run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    report = evaluate_onnx(tmp_path / "a8.onnx", spec)
    assert report.max_relative_error <= 1e-5 and report.metrics == report.artifact_metrics
    with pytest.raises(ProblemError, match="records 8-bit"):
        export_onnx(tmp_path / "art", spec, tmp_path / "x.onnx", activation_bits=4)
    assert export_onnx(tmp_path / "art", spec, tmp_path / "y.onnx", activation_bits=8,
                       observer="percentile").activation_source == "artifact"

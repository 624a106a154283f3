"""docs/architecture.md's promise, kept: a new cost model is one class plus one registry line, and the command line
runs `extract -> solve -> apply` with it unchanged. The throwaway model prices each candidate by its quantisation
error energy |d|^2 (curvature taken as the identity); the test recomputes those energies on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals

torch = pytest.importorskip("torch")


class EnergyOnly(CostModel):
    """The file a contributor writes: loss change ~ |d|^2 (rate-distortion with the identity as curvature)."""

    name = "energy-only"
    description = "|d|^2: every weight equally sensitive"
    needs = frozenset({"energy"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("energy").copy())


def tiny() -> object:
    """A 6-8-3 MLP and two calibration batches (the model a user writes: ``test_extension:tiny``)."""
    from cetopt import ModelSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(64, 6)
    return ModelSpec(name="tiny", model=model, calibration=[x[:32], x[32:]])


def symmetric_per_channel(weight: np.ndarray, bits: int) -> np.ndarray:
    """Round-to-nearest on the max|w| grid, one float32 scale per output row, levels -L..L with L = 2^(b-1) - 1."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float64)
    levels = 2 ** (bits - 1) - 1
    scale = (np.abs(rows).max(axis=1, keepdims=True) / levels).astype(np.float32).astype(np.float64)
    return (np.clip(np.round(rows / scale), -levels, levels) * scale).reshape(weight.shape)


def test_a_registered_cost_model_runs_extract_solve_apply(tmp_path: Path, root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cetopt import load_compressed
    from cetopt.cli import main
    from cetopt.costmodels.registry import _REGISTRY, register
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.io import load_problem
    from cetopt.quant.plan import Plan

    monkeypatch.syspath_prepend(str(root / "tests"))
    monkeypatch.chdir(tmp_path)
    register("energy-only", "test_extension:EnergyOnly")  # the one registry line
    try:
        assert main(["extract", "test_extension:tiny", "--method", "energy-only", "--clip", "none", "--bits", "2,4,8",
                     "--avg-bits", "4", "--out", "problem.json"]) == 0
        assert main(["solve", "problem.json", "--solver", "dp", "--out", "plan.json"]) == 0
        assert main(["apply", "plan.json", "--model", "test_extension:tiny", "--out", "art"]) == 0
    finally:
        _REGISTRY.pop("energy-only", None)
    problem = load_problem(tmp_path / "problem.json")
    assert problem.metadata["method"] == "energy-only"
    spec = load_model_spec("test_extension:tiny")
    weights = {name: p.detach().numpy() for name, p in spec.model.named_parameters() if name.endswith("weight")}
    for layer in problem.layers:
        w = weights[f"{layer.name}.weight"]
        for choice in layer.choices:  # the problem prices each candidate by the throwaway model: |Q_b(W) - W|^2
            energy = float(((symmetric_per_channel(w, choice.bits) - w) ** 2).sum())
            assert choice.loss == pytest.approx(energy, rel=1e-5)
    plan = Plan.load(tmp_path / "plan.json")
    unpacked = dict(load_compressed(tmp_path / "art", spec).model.named_parameters())
    assert set(plan.bits) == {layer.name for layer in problem.layers}
    for name, bits in plan.bits.items():  # the artefact stores the planned grid, equal up to float32 rounding
        expected = symmetric_per_channel(weights[f"{name}.weight"], bits)
        assert np.allclose(unpacked[f"{name}.weight"].detach().numpy(), expected, rtol=0, atol=1e-6)

"""nn.MultiheadAttention's bare projection Parameters (the packed in_proj_weight; q/k/v_proj_weight when key and
value have other sizes) as quantisable layers, end to end: found by default, forms equal to an independent float64
double backward (the attention replayed with the weight swapped inside it), and planned, applied and written by
apply at the packed size the solve reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.curvature import CurvatureOperator, find_layers, quadratic_forms
from cetopt.curvature.extract import CurvatureSettings
from cetopt.curvature.layers import layer_weight, weight_key
from cetopt.modelspec import ModelSpec
from cetopt.quant.quantizers import QuantizerSpec, quantization_error
from tests.double_backward import exact_form


class Attender(nn.Module):
    """Linear token features -> self-attention -> mean -> Linear (no Embedding: the attention's inputs vary)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(5, dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        out, _ = self.attn(h, h, h, need_weights=False)
        return self.head(out.mean(1))


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def attention_spec(seed: int = 0, dtype: torch.dtype = torch.float32) -> ModelSpec:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(4, 6, 5, generator=g, dtype=dtype), torch.randint(0, 3, (4,), generator=g))
               for _ in range(2)]
    return ModelSpec(name="attender", model=Attender().to(dtype).eval(), calibration=batches, loss_fn=ce)


def test_projections_are_found_by_default() -> None:
    model = nn.ModuleDict({"same": nn.MultiheadAttention(8, 2), "other": nn.MultiheadAttention(8, 2, kdim=4, vdim=6)})
    names = [r.name for r in find_layers(model)]
    assert names == ["same.in_proj_weight", "same.out_proj", "other.q_proj_weight", "other.k_proj_weight",
                     "other.v_proj_weight", "other.out_proj"]
    assert weight_key(model, "same.in_proj_weight") == "same.in_proj_weight"
    assert weight_key(model, "same.out_proj") == "same.out_proj.weight"
    assert layer_weight(model, "other.k_proj_weight").shape == (8, 4)


def test_in_proj_forms_equal_an_independent_double_backward() -> None:
    spec = attention_spec(3, torch.float64)
    model, batches = spec.model, spec.calibration
    op = CurvatureOperator(model, ce, batches, device="cpu", dtype=torch.float64)
    assert "attn.in_proj_weight" in op.names
    weight = model.attn.in_proj_weight
    errors = {"attn.in_proj_weight": [quantization_error(weight.detach(), b, QuantizerSpec()) for b in (2, 4)]}
    fast = quadratic_forms(op, errors, show_progress=False)
    assert fast.paths["attn.in_proj_weight"].graph == "prefix cached"  # the attention replayed, not the full graph
    for k, e in enumerate(errors["attn.in_proj_weight"]):
        reference = exact_form(model, "attn.in_proj_weight", weight, e, batches, ce)
        assert abs(reference) > 0
        np.testing.assert_allclose(fast.own["attn.in_proj_weight"][k], reference, rtol=1e-8)


def test_plan_covers_the_projection_and_apply_writes_the_reported_size(tmp_path: Path) -> None:
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.problem.model import Budget
    from cetopt.quant.pack import problem_packed_size
    from cetopt.quant.apply import apply_plan
    from cetopt.quant.plan import plan_from_result
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    spec = attention_spec(5)
    built = build_for(spec, method="cet", bits=(2, 4, 8), budget=Budget(avg_bits=4.0), cache_dir=False,
                      settings=CurvatureSettings(k=0, max_probes=4, min_probes=2))
    problem = built.problem
    layer = next(layer for layer in problem.layers if layer.name == "attn.in_proj_weight")
    assert layer.shape == (24, 8) and all(np.isfinite(c.loss) and c.loss != 0 for c in layer.choices)
    weights = problem.metadata["coverage"]["weights"]
    assert weights["planned_count"] == sum(r.params for r in find_layers(spec.model))
    assert not any(name == "attn.in_proj_weight" for name, _, _ in weights["largest_kept"])
    plan = plan_from_result(problem, solve(problem, "dp"), model="attender")
    info = write_artifact(spec, plan, tmp_path / "art", target="attender")
    reported = problem_packed_size(problem, plan)
    assert reported is not None and reported.total_bytes == info.predicted_bytes == info.data_bytes
    loaded = load_compressed(tmp_path / "art", spec)
    applied = apply_plan(spec.model, plan)
    torch.testing.assert_close(loaded.weights["attn.in_proj_weight"], applied.weights["attn.in_proj_weight"],
                               rtol=0, atol=0)
    assert not torch.equal(applied.weights["attn.in_proj_weight"], spec.model.attn.in_proj_weight)  # quantised
    x = spec.calibration[0][0]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), applied.model(x))
        torch.testing.assert_close(loaded.model.attn.in_proj_weight, applied.weights["attn.in_proj_weight"])


def test_gptq_on_the_projection_uses_the_attention_input_gram() -> None:
    """Self-attention: q, k and v rows all project the query, so in_proj_weight's Gram is X'X / N of the query's
    rows, computed here from the recorded attention input; gptq on it lowers the layer-output error below nearest's."""
    from cetopt.quant.adaround import layer_grams
    from cetopt.quant.rounding import round_weight
    from cetopt.quant.rounding.base import RoundingContext, gram_energy

    spec = attention_spec(6)
    gram = layer_grams(spec.model, ["attn.in_proj_weight"], ce, spec.calibration)["attn.in_proj_weight"]
    with torch.no_grad():
        rows = torch.cat([torch.tanh(spec.model.inp(x)).reshape(-1, 8) for x, _ in spec.calibration]).double()
    torch.testing.assert_close(gram, (rows.T @ rows / rows.shape[0])[None])
    weight = spec.model.attn.in_proj_weight.detach()
    flat = weight.double()
    errors = {r: gram_energy(round_weight(r, weight, 3, QuantizerSpec(), RoundingContext(gram=gram)).weight.double()
                             - flat, gram) for r in ("nearest", "gptq")}
    assert errors["gptq"] < errors["nearest"]

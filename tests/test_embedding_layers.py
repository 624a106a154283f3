"""nn.Embedding tables as quantisable layers, end to end: found by default (one channel per row), their quadratic
forms equal an independent float64 double backward, priced in the problem, rounded (gptq reduces to nearest on a
lookup), and written by apply at exactly the packed size the solve reports."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.curvature import CurvatureOperator, find_layers, quadratic_forms
from cetopt.curvature.extract import CurvatureSettings
from cetopt.modelspec import ModelSpec
from cetopt.quant.quantizers import QuantizerSpec, quantization_error
from tests.double_backward import exact_form


class TextModel(nn.Module):
    """Token and position tables into a TransformerEncoderLayer, mean-pooled into a Linear head."""

    def __init__(self, vocab: int = 20, dim: int = 8, length: int = 6) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(length, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        return self.head(self.encoder(h).mean(1))


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def text_spec(seed: int = 0, dtype: torch.dtype = torch.float32) -> ModelSpec:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randint(0, 20, (4, 6), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    return ModelSpec(name="text", model=TextModel().to(dtype).eval(), calibration=batches, loss_fn=ce)


def test_tables_are_found_by_default_and_excluded_by_name(caplog: pytest.LogCaptureFixture) -> None:
    class Tied(nn.Embedding):  # a subclass is a table too
        pass

    model = nn.ModuleDict({"a": nn.Embedding(5, 3), "b": Tied(4, 3), "c": nn.Embedding(4, 3, max_norm=1.0),
                           "d": nn.Linear(3, 2)})
    with caplog.at_level(logging.INFO, logger="cetopt.curvature.layers"):
        assert [r.name for r in find_layers(model)] == ["a", "b", "d"]
    assert "c has max_norm" in caplog.text  # renormalised in place by its forward: kept in FP32, said so
    assert [r.name for r in find_layers(model, exclude=["a"])] == ["b", "d"]


def test_table_forms_equal_an_independent_double_backward() -> None:
    """e' H e of the tables from the fast paths (the lookup's output tangent dz = e[idx]) against
    d^2/dt^2 L(W + t e) by autograd on the whole model, float64."""
    spec = text_spec(3, torch.float64)
    model, batches = spec.model, spec.calibration
    op = CurvatureOperator(model, ce, batches, device="cpu", dtype=torch.float64)
    assert {"tokens", "positions"} <= set(op.names)
    errors = {n: [quantization_error(p.detach(), b, QuantizerSpec()) for b in (2, 4)]
              for n, p in zip(op.names, op.params) if n in ("tokens", "positions")}
    fast = quadratic_forms(op, errors, show_progress=False)
    assert fast.paths["tokens"].forms != "double backward in the weight"  # the lookup's output shortcut ran
    for name, block in errors.items():
        weight = dict(model.named_modules())[name].weight
        for k, e in enumerate(block):
            reference = exact_form(model, f"{name}.weight", weight, e, batches, ce)
            assert abs(reference) > 0
            np.testing.assert_allclose(fast.own[name][k], reference, rtol=1e-8, err_msg=name)


def test_gptq_on_a_table_is_nearest() -> None:
    """A lookup's layer-output error is each row's own error: the Gram matrix is the identity and gptq's
    compensation vanishes."""
    from cetopt.quant.adaround import layer_grams
    from cetopt.quant.rounding import round_weight
    from cetopt.quant.rounding.base import RoundingContext

    spec = text_spec(4)
    gram = layer_grams(spec.model, ["tokens"], ce, spec.calibration)["tokens"]
    torch.testing.assert_close(gram, torch.eye(8, dtype=torch.float64)[None])
    weight = spec.model.tokens.weight.detach()
    for bits in (2, 3, 4):
        gptq = round_weight("gptq", weight, bits, QuantizerSpec(), RoundingContext(gram=gram)).weight
        nearest = round_weight("nearest", weight, bits, QuantizerSpec()).weight
        torch.testing.assert_close(gptq, nearest, rtol=0, atol=0)


def test_plan_covers_the_tables_and_apply_writes_the_reported_size(tmp_path: Path) -> None:
    from cetopt.artifact import load_compressed, write_artifact
    from cetopt.problem.model import Budget
    from cetopt.quant.pack import problem_packed_size
    from cetopt.quant.plan import plan_from_result
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    spec = text_spec(5)
    built = build_for(spec, method="cet", bits=(2, 4, 8), budget=Budget(avg_bits=4.0), cache_dir=False,
                      settings=CurvatureSettings(k=0, max_probes=4, min_probes=2))
    problem = built.problem
    layers = {layer.name: layer for layer in problem.layers}
    assert layers["tokens"].shape == (20, 8) and layers["tokens"].macs == 0 and layers["positions"].shape == (6, 8)
    assert all(c.loss != 0 and np.isfinite(c.loss) for c in layers["tokens"].choices)  # priced, not free
    weights = problem.metadata["coverage"]["weights"]
    tables = 20 * 8 + 6 * 8
    assert weights["planned_count"] == sum(r.params for r in find_layers(spec.model))
    assert not any(name.endswith(("tokens.weight", "positions.weight")) for name, _, _ in weights["largest_kept"])
    assert weights["planned_count"] >= tables
    seen = {int(i) for ids, _ in spec.calibration for i in ids.unique()}  # the rows the calibration looks up
    assert problem.metadata["coverage"]["tables"] == {"tokens": {"rows_seen": len(seen), "rows": 20},
                                                      "positions": {"rows_seen": 6, "rows": 6}}
    from cetopt.curvature.coverage import coverage_lines

    assert f"embedding table tokens: {len(seen)} of 20 rows looked up" in "\n".join(
        coverage_lines(problem.metadata["coverage"]))
    plan = plan_from_result(problem, solve(problem, "dp"), model="text")
    assert {"tokens", "positions"} <= set(plan.layers)
    info = write_artifact(spec, plan, tmp_path / "art", target="text")
    reported = problem_packed_size(problem, plan)
    assert reported is not None and reported.total_bytes == info.predicted_bytes == info.data_bytes
    assert reported.ratio == pytest.approx(info.size.ratio)
    loaded = load_compressed(tmp_path / "art", spec)
    x = spec.calibration[0][0]
    with torch.no_grad():
        out = loaded.model(x)
        torch.testing.assert_close(out, built.apply(spec.model, {n: c.bits for n, c in plan.layers.items()})(x))

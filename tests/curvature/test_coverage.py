"""The coverage report (cetopt.curvature.coverage): the weight split against a count by hand, the text the CLI
prints from a stored record, and why a model that fx cannot trace takes the full graph, said per layer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cetopt.curvature import CurvatureOperator, quadratic_forms
from cetopt.curvature.coverage import FULL, HOOKED, OUTPUT_BACKWARD, PREFIX, LayerPath, coverage_lines, coverage_report, weight_coverage


class Tied(nn.Module):
    """An embedding tied to the output layer (one parameter, two modules), a LayerNorm and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.mix(self.norm(self.embed(tokens))))


def test_weights_are_split_into_planned_and_kept_counting_shared_ones_once() -> None:
    model = Tied()
    split = weight_coverage(model, ["mix"])
    assert (split.planned_count, split.planned_bytes) == (16, 64)
    assert split.kept_count == 10 * 4 + 4 + 4 + 4  # embedding (= out.weight) once, LayerNorm, mix.bias
    assert split.kept_bytes == 4 * split.kept_count
    assert split.largest_kept[0] == ("embed.weight", "Embedding", 40)
    assert split.planned_share == 16 / (16 + 52)


def test_the_printed_lines_name_each_fallback_and_the_kept_weights() -> None:
    paths = {"mix": LayerPath("mix", PREFIX, "forward mode"),
             "out": LayerPath("out", FULL, "double backward in the weight", "torch.fx cannot trace Tied (TraceError)")}
    record = coverage_report(Tied(), ["mix", "out"], paths, "shared", "layer out is not a module call").to_dict()
    lines = coverage_lines(record)
    assert lines[0] == "quadratic forms: 1 of 2 layers prefix cached, 1 by forward mode"
    assert lines[1] == "  out: full graph, double backward in the weight (torch.fx cannot trace Tied (TraceError))"
    assert lines[2] == "traces: shared (layer out is not a module call)"
    assert lines[3].startswith("weights: 56 planned (224 bytes, ") and "largest kept: norm.weight (LayerNorm, 4)" in lines[3]
    assert coverage_lines(None) == []


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.b(torch.tanh(self.a(x)))


def test_an_untraceable_model_takes_its_forms_from_hooked_outputs_with_the_trace_error_recorded() -> None:
    torch.manual_seed(0)
    data = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))) for _ in range(2)]
    op = CurvatureOperator(Branchy().double(), lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), data,
                           device="cpu")
    g = torch.Generator().manual_seed(0)
    errors = {n: [torch.randn(p.shape, generator=g, dtype=torch.float64) for _ in range(2)]
              for n, p in zip(op.names, op.params)}
    forms = quadratic_forms(op, errors, show_progress=False)
    reference = quadratic_forms(op, errors, prefix_cache=False, show_progress=False)
    for name in op.names:
        assert (forms.paths[name].graph, forms.paths[name].forms) == (HOOKED, OUTPUT_BACKWARD)
        assert "torch.fx cannot trace Branchy" in str(forms.paths[name].fallback)
        assert reference.paths[name].graph == FULL
        np.testing.assert_allclose(forms.own[name], reference.own[name], rtol=1e-10)
        assert np.abs(reference.own[name]).max() > 0


class StdLinear(nn.Linear):
    """Weight-standardised: its output is not affine in its weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        return nn.functional.linear(x, (w - w.mean()) / w.std(), self.bias)


def test_hooks_refuse_a_layer_not_affine_in_its_weight_and_the_full_graph_serves_it() -> None:
    torch.manual_seed(1)
    model = Branchy().double()
    model.a = StdLinear(3, 4).double()
    data = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,)))]
    op = CurvatureOperator(model, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), data, device="cpu")
    g = torch.Generator().manual_seed(1)
    errors = {n: [torch.randn(p.shape, generator=g, dtype=torch.float64)] for n, p in zip(op.names, op.params)}
    forms = quadratic_forms(op, errors, show_progress=False)
    assert forms.paths["a"].graph == FULL and "StdLinear): its output is not affine in its weight" in str(
        forms.paths["a"].fallback)
    assert forms.paths["b"].graph == HOOKED
    reference = quadratic_forms(op, errors, prefix_cache=False, show_progress=False)
    for name in op.names:
        np.testing.assert_allclose(forms.own[name], reference.own[name], rtol=1e-10)

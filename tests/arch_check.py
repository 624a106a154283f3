"""The check every model of the architecture suite (tests/curvature/architectures/) runs: quadratic forms by the
fast paths equal the full-graph double backward in float64 (1e-4 relative), the build (what ``cetopt extract``
runs) records a coverage report naming each layer's path, and each layer took the path the test expects."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cetopt.builders.second_order import build
from cetopt.curvature import CurvatureOperator, quadratic_forms
from cetopt.curvature.coverage import FORWARD, FULL, HOOKED, OUTPUT_BACKWARD, PREFIX, WEIGHT_BACKWARD
from cetopt.curvature.extract import CurvatureSettings, extract_curvature
from cetopt.modelspec import ModelSpec
from cetopt.problem.model import Budget
from cetopt.recipe import Recipe

PATHS = {"forward": (PREFIX, FORWARD), "output": (PREFIX, OUTPUT_BACKWARD), "weight": (PREFIX, WEIGHT_BACKWARD),
         "hooked": (HOOKED, OUTPUT_BACKWARD), "full": (FULL, WEIGHT_BACKWARD)}


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def image_batches(seed: int, shape: Sequence[int], classes: int, count: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (shape[0],), generator=g))
            for _ in range(count)]


def randomise_norms(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh BatchNorm is the identity in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def check_architecture(model: nn.Module, batches: list[Any], expected: Mapping[str, str], *,
                       loss_fn: Callable[[nn.Module, Any], torch.Tensor] = ce, trace_estimator: str | None = None,
                       fallbacks: Mapping[str, str] = {}, seed: int = 0,
                       layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the suite's checks on ``model`` (converted to float64, eval mode) and return the coverage record.

    ``expected``: layer -> "forward" / "output" / "weight" / "hooked" / "full" (:data:`PATHS`), for every quantisable
    layer; ``fallbacks``: layer -> text its recorded fallback must contain; ``trace_estimator``: the estimator
    ``trace_mode="auto"`` must pick ("output" or "shared"); ``layers``: the modules to plan (default: every
    Linear/Conv).
    """
    model = model.double().eval()
    op = CurvatureOperator(model, loss_fn, batches, layers=layers, device="cpu", dtype=torch.float64)
    assert sorted(op.names) == sorted(expected), (op.names, sorted(expected))
    g = torch.Generator().manual_seed(seed)
    errors = {n: [torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.05 for _ in range(2)]
              for n, p in zip(op.names, op.params)}
    fast = quadratic_forms(op, errors, show_progress=False)
    reference = quadratic_forms(op, errors, prefix_cache=False, show_progress=False)  # the full double backward
    for name in op.names:
        np.testing.assert_allclose(fast.own[name], reference.own[name], rtol=1e-4,
                                   atol=1e-12 * max(1.0, float(np.abs(reference.own[name]).max())), err_msg=name)
        assert np.abs(reference.own[name]).max() > 0, f"{name}: a zero form checks nothing"
    taken = {n: (p.graph, p.forms) for n, p in fast.paths.items()}
    assert taken == {n: PATHS[e] for n, e in expected.items()}, {n: p for n, p in fast.paths.items()}
    for name, text in fallbacks.items():
        assert text in str(fast.paths[name].fallback), (name, fast.paths[name].fallback)
    spec = ModelSpec(name="arch", model=model, calibration=batches, loss_fn=loss_fn,
                     layers=None if layers is None else tuple(layers))
    built = build(spec, Recipe(cost_model="cet", bits=(4, 8)), cache_dir=False,
                  settings=CurvatureSettings(k=0, dtype="float64")).with_budget(Budget(avg_bits=4.0))
    record = built.problem.metadata["coverage"]
    assert {n: (p["graph"], p["forms"]) for n, p in record["layers"].items()} == taken
    planned = sum(p.numel() for p in op.params)
    total = sum(p.numel() for p in model.parameters())
    assert record["weights"]["planned_count"] == planned and record["weights"]["kept_count"] == total - planned
    if trace_estimator is not None:
        result = extract_curvature(model, loss_fn, batches, cache_dir=False, show_progress=False, layers=layers,
                                   settings=CurvatureSettings(k=0, dtype="float64", max_probes=2, min_probes=2))
        assert result.metadata["trace_estimator"] == trace_estimator, result.metadata["trace_fallback"]
        assert (result.metadata["trace_fallback"] is None) == (trace_estimator == "output")
        assert all(np.isfinite(layer.trace) for layer in result.layers)
    return record

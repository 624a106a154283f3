"""The optimiser's curse, built on purpose: a model whose calibration gradient is pure noise.

The network is its own teacher: targets are y = f_W(x) + sigma * noise, so W minimises the expected loss, the
expected gradient is exactly zero and the calibration gradient g is sample noise. Every plan's true loss change
E_x |f_What(x) - f_W(x)|^2 / outputs is > 0 (measured on clean inputs). An exact solver on CET's signed cost
picks the candidates whose noise came out negative; a cost model that does not chase noise must return the
curvature-only (cet-nograd) plan.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cetopt import solve
from cetopt.builders.second_order import build
from cetopt.costmodels.registry import DEFAULT_COST_MODEL
from cetopt.modelspec import ModelSpec
from cetopt.problem.model import Budget
from cetopt.recipe import Recipe

SEEDS = range(6)
SIGMA, SAMPLES, BATCH = 2.0, 256, 64


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return ((model(batch[0]) - batch[1]) ** 2).mean()


def _noise_task(seed: int) -> tuple[nn.Module, list, tuple]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)).double()
    g = torch.Generator().manual_seed(seed + 100)

    def draw(m: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(m, 8, generator=g, dtype=torch.float64)
        with torch.no_grad():
            return x, model(x) + sigma * torch.randn(m, 4, generator=g, dtype=torch.float64)

    return model, [draw(BATCH, SIGMA) for _ in range(SAMPLES // BATCH)], draw(8192, 0.0)


def _plan(model: nn.Module, calibration: list, method: str, clean: tuple) -> tuple[tuple[int, ...], float, float]:
    """(bits per layer, predicted change, true change on clean inputs) of ``method``'s dp plan at 4 bits."""
    spec = ModelSpec(name="noise", model=model, calibration=calibration, loss_fn=_mse)
    built = build(spec, Recipe(cost_model=method, bits=(2, 3, 4, 6, 8)), cache_dir=False).with_budget(Budget(avg_bits=4.0))
    result = solve(built.problem, "dp")
    with torch.no_grad():
        true = float(_mse(built.apply(model, result.bits), clean))
    return tuple(result.bits[layer.name] for layer in built.problem.layers), float(result.loss), true


@pytest.fixture(scope="module")
def plans() -> dict[int, dict[str, tuple[tuple[int, ...], float, float]]]:
    out = {}
    for seed in SEEDS:
        model, calibration, clean = _noise_task(seed)
        out[seed] = {m: _plan(model, calibration, m, clean)
                     for m in {"cet", "cet-nograd", "cet-shrink", DEFAULT_COST_MODEL}}
    return out


@pytest.mark.parametrize("method", sorted({"cet-shrink", DEFAULT_COST_MODEL}))
def test_robust_model_returns_the_curvature_only_plan(plans, method: str) -> None:  # type: ignore[no-untyped-def]
    for seed in SEEDS:
        assert plans[seed][method][0] == plans[seed]["cet-nograd"][0], f"seed {seed}: {method} chased the noise"


def test_exact_cet_chases_the_noise(plans) -> None:  # type: ignore[no-untyped-def]
    chased = [s for s in SEEDS if plans[s]["cet"][0] != plans[s]["cet-nograd"][0]]
    assert len(chased) >= 4, f"cet's plan differed from the curvature-only plan on seeds {chased} only"
    for seed in chased:
        bits, predicted, true = plans[seed]["cet"]
        assert predicted < 0 < true, f"seed {seed}: cet predicted {predicted:.2e}, true change {true:.2e}"
        assert true > plans[seed]["cet-nograd"][2], f"seed {seed}: chasing the noise did not cost anything"

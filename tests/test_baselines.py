"""The reviewer's baselines against independent truth: the gradient step's gradient and loss change computed by
hand on a least-squares model, MSE clipping never worse than plain rounding in weight error, AdaRound plan
weights never worse than nearest in layer output error, and the same bit-widths (packed size) as the plan."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cetopt.baselines import adaround_plan_weights, gradient_step, mse_clip_weights
from cetopt.errors import ProblemError
from cetopt.modelspec import ModelSpec
from cetopt.quant.quantizers import fake_quantize


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _spec(seed: int = 0) -> ModelSpec:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    batches = [(torch.randn(20, 6, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)) for _ in range(3)]
    return ModelSpec(name="tiny", model=model, calibration=batches, loss_fn=_mse)


def test_gradient_step_is_the_best_step_of_its_grid() -> None:
    spec = _spec()
    lrs = (1e-3, 1e-2, 1e-1, 1.0)
    step = gradient_step(spec, ["0", "2"], lrs=lrs)
    params = [spec.model[0].weight, spec.model[2].weight]
    loss = sum(_mse(spec.model, b) for b in spec.calibration) / len(spec.calibration)
    grads = torch.autograd.grad(loss, params)                      # independent: the mean loss differentiated at once
    base = float(loss.detach())

    def loss_at(lr: float) -> float:
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).double()
        model.load_state_dict(spec.model.state_dict())
        with torch.no_grad():
            model[0].weight -= lr * grads[0]
            model[2].weight -= lr * grads[1]
            return float(sum(_mse(model, b) for b in spec.calibration) / len(spec.calibration))

    changes = {lr: loss_at(lr) - base for lr in lrs}
    best = min(changes, key=changes.get)
    assert step.lr == best
    assert step.calibration_dloss == pytest.approx(changes[best], rel=1e-9, abs=1e-12)
    assert step.calibration_dloss < 0                               # a small step on a non-minimum helps
    assert torch.allclose(step.weights["0"], spec.model[0].weight.detach() - best * grads[0])
    assert spec.model[0].weight.grad is None                        # the model is left as it was
    with pytest.raises(ProblemError) as err:
        gradient_step(spec, ["0"], lrs=(0.0,))
    assert err.value.field == "lrs"


def test_mse_clip_never_worse_in_weight_error_and_keeps_the_bits() -> None:
    spec = _spec(1)
    bits = {"0": 2, "2": 3}
    clipped = mse_clip_weights(spec, bits)
    for name, b in bits.items():
        w = dict(spec.model.named_modules())[name].weight.detach()
        assert float(((clipped[name] - w) ** 2).sum()) <= float(((fake_quantize(w, b) - w) ** 2).sum()) + 1e-15
        assert len(torch.unique(clipped[name][0])) <= 2 ** b - 1     # still a b-bit symmetric grid per channel


def test_adaround_plan_weights_beat_nearest_on_layer_outputs() -> None:
    spec = _spec(2)
    bits = {"0": 3, "2": 3}
    rounded = adaround_plan_weights(spec, bits)
    x = torch.cat([b[0] for b in spec.calibration])
    hidden = torch.tanh(spec.model[0](x)).detach()
    for name, inputs in (("0", x), ("2", hidden)):
        w = dict(spec.model.named_modules())[name].weight.detach()
        def err(q: torch.Tensor, inputs: torch.Tensor = inputs, w: torch.Tensor = w) -> float:
            return float(((inputs @ (q - w).T) ** 2).sum(1).mean())

        assert err(rounded[name]) <= err(fake_quantize(w, bits[name])) * (1 + 1e-12)


def test_baselines_take_any_rounding() -> None:
    """rounded_plan_weights rounds a baseline allocation exactly as the rounding does on its own (Gram matrices from
    the spec's calibration batches), and nearest on the default grid is fake_quantize."""
    import torch

    from cetopt.baselines import rounded_plan_weights
    from cetopt.quant.adaround import layer_grams
    from cetopt.quant.quantizers import fake_quantize
    from cetopt.quant.rounding import round_weight
    from cetopt.quant.rounding.base import RoundingContext
    from cetopt.workflow import DEFAULT_QUANTIZER
    from tests.test_artifact import small_spec

    spec = small_spec()
    bits = {"0": 3, "4": 1}
    modules = dict(spec.model.named_modules())
    gptq = rounded_plan_weights(spec, bits, "gptq")
    gram = layer_grams(spec.model, ["0"], spec.loss_fn, spec.calibration)["0"]
    truth = round_weight("gptq", modules["0"].weight, 3, DEFAULT_QUANTIZER, RoundingContext(gram=gram)).weight
    assert torch.equal(gptq["0"], truth)
    assert torch.equal(gptq["4"], fake_quantize(modules["4"].weight, 1, DEFAULT_QUANTIZER))  # 1 bit: nearest
    nearest = rounded_plan_weights(spec, bits, "nearest")
    assert all(torch.equal(nearest[n], fake_quantize(modules[n].weight, b, DEFAULT_QUANTIZER)) for n, b in bits.items())

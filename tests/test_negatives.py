"""A task loss that rewards sharpening (cross-entropy against the model's own top-1: scaling the logits up lowers it)
gives candidates with negative predicted and measured changes; the plan built on it takes them and the warning
names them, while the fidelity objective's plan at the same budget does not take the 2-bit candidates the task
plan buys with their negative changes."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from cetopt import ModelSpec, solve
from cetopt.negatives import plan_reliance, warn_if_negative
from cetopt.problem.model import Budget
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.workflow import build_for


def _sharpening_case() -> tuple[ModelSpec, ModelSpec, torch.Tensor]:
    """A ReLU MLP whose classifier rows are +-0.75c with one +-c entry: on the max|w| grid its 2-bit candidate
    rounds every entry to +-c, scaling the logits up by about 4/3 (a sharper softmax, same top-1)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(384, 10, generator=g)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    with torch.no_grad():
        signs = torch.sign(torch.randn(5, 32, generator=g))
        weight = 0.75 * signs
        weight[:, 0] = signs[:, 0]
        model[4].weight.copy_(0.1 * weight)
        model[4].bias.zero_()
        top1 = model(x).argmax(1)

    def own_top1_ce(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    calibration = [(x[i:i + 64], top1[i:i + 64]) for i in range(0, 256, 64)]
    validation = [(x[256:], top1[256:])]
    task = ModelSpec(name="sharpen-task", model=model, calibration=calibration, validation=validation,
                     loss_fn=own_top1_ce)
    fidelity = ModelSpec(name="sharpen-fidelity", model=model, calibration=[b[0] for b in calibration],
                         validation=[b[0] for b in validation])
    return task, fidelity, x[256:]


def _plan(spec: ModelSpec):  # type: ignore[no-untyped-def]
    built = build_for(spec, bits=(2, 3, 4, 8), budget=Budget(avg_bits=3.0), cache_dir=False, quantizer=QuantizerSpec())
    return built, solve(built.problem, "dp")


def test_task_loss_plan_takes_negative_changes_and_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    task, fidelity, held_out = _sharpening_case()
    task_built, task_result = _plan(task)
    negatives = task_built.problem.metadata["negative_changes"]
    assert "2b" in negatives["4"]  # the classifier's sharpening candidate: predicted and measured < 0
    assert negatives["4"]["2b"]["predicted"] < 0 and negatives["4"]["2b"]["measured"] < 0
    with caplog.at_level(logging.WARNING, logger="cetopt.negatives"):
        reliance = warn_if_negative(task_built.problem, task_result.choices)
    assert task_result.bits["4"] == 2 and reliance is not None
    taken = {(layer, label) for layer, label, _, _ in reliance.layers}
    assert ("4", "2b") in taken and reliance.negative_predicted < 0
    message = caplog.records[-1].getMessage()
    assert "4 at 2b" in message and f"{len(reliance.layers)} layer(s)" in message
    assert "cetopt.losses.kl_to_reference" in message and "omit ModelSpec.loss_fn" in message

    fid_built, fid_result = _plan(fidelity)
    assert "negative_changes" not in fid_built.problem.metadata
    assert fid_built.problem.metadata["fidelity_sign_check"] == "every predicted change >= 0"
    fid_taken = {(layer.name, layer.choices[fid_result.choices[layer.name]].label) for layer in fid_built.problem.layers}
    # the coarse candidates the task plan takes on the strength of their negative change (every candidate of layer
    # 2 is negative under the task loss, so only those below the fidelity plan's bit-widths are the task plan's pick)
    cheap = {(layer, label) for layer, label in taken if label == "2b"}
    assert ("4", "2b") in cheap and not fid_taken & cheap
    assert plan_reliance(fid_built.problem, fid_result.choices) is None
    # and the fidelity plan behaves more like FP32 on held-out inputs (top-1 agreement)
    with torch.no_grad():
        fp = task.model(held_out).argmax(1)
        agree = {name: float((built.apply(task.model, r.bits)(held_out).argmax(1) == fp).double().mean())
                 for name, built, r in (("task", task_built, task_result), ("fidelity", fid_built, fid_result))}
    assert agree["fidelity"] >= agree["task"]

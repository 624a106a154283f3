"""A CNN whose convolutions are nn.Conv2d subclasses with same padding, static (EfficientNet-PyTorch's
Conv2dStaticSamePadding: F.pad then F.conv2d) and dynamic (timm's Conv2dSame: the padding computed from the
input's shape, which torch.fx cannot trace through): each stays one leaf, so every layer keeps prefix caching,
forward-mode forms and output-space traces, like the same model with plain nn.Conv2d."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches, randomise_norms


class StaticSameConv(nn.Conv2d):
    """Pads by a fixed amount in its own forward (the padding argument stays 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size[0] // 2
        return F.conv2d(F.pad(x, (p, p, p, p)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class DynamicSameConv(nn.Conv2d):
    """TensorFlow-style "same" padding computed from the input size with math.ceil (not fx-traceable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SamePaddingCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = StaticSameConv(3, 6, 3, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.block = DynamicSameConv(6, 6, 3)
        self.point = StaticSameConv(6, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.bn(self.stem(x)))
        h = h + F.relu(self.block(h))
        return self.head(F.adaptive_avg_pool2d(F.relu(self.point(h)), 1).flatten(1))


def test_same_padding_conv_subclasses_keep_every_fast_path() -> None:
    torch.manual_seed(0)
    model = SamePaddingCNN()
    randomise_norms(model, 0)
    check_architecture(model, image_batches(0, (4, 3, 9, 9), 5),
                       {"stem": "forward", "block": "forward", "point": "forward", "head": "forward"},
                       trace_estimator="output")

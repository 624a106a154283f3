"""A depthwise-separable CNN (MobileNet/ShuffleNet style): depthwise 3x3 and pointwise 1x1 convolutions, eval-mode
BatchNorm, ReLU6 and torchvision's channel_shuffle, whose ``num_channels // groups`` is shape arithmetic: a node
with no floating-point value, which must not block forward mode or output-space traces."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches, randomise_norms


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, num_channels, height, width = x.size()
    per_group = num_channels // groups
    x = x.view(batch, groups, per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, num_channels, height, width)


class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(4)
        self.pointwise = nn.Conv2d(4, 6, 1, groups=2)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.bn1(self.stem(x)))
        h = F.relu6(self.bn2(self.depthwise(h)))
        h = channel_shuffle(F.relu(self.pointwise(h)), 2)
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_depthwise_separable_cnn_with_channel_shuffle_keeps_forward_mode() -> None:
    torch.manual_seed(8)
    model = DepthwiseSeparable()
    randomise_norms(model, 8)
    check_architecture(model, image_batches(8, (4, 3, 6, 6), 3),
                       {"stem": "forward", "depthwise": "forward", "pointwise": "forward", "head": "forward"},
                       trace_estimator="output")

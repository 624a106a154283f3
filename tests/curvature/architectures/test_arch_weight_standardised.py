"""BiT-style weight-standardised convolutions (StdConv2d: the weight normalised to zero mean and unit variance per
output channel inside forward) with GroupNorm: the output is not affine in the weight, so the output shortcut is
refused (the check names the module) and the prefix-cached weight path gives the exact forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches


class StdConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) / torch.sqrt(var + 1e-6), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class BiTBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = StdConv2d(3, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.conv2 = StdConv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.gn(self.conv1(x)))
        h = F.relu(self.conv2(h)) + h
        return self.head(h.mean((2, 3)))


def test_weight_standardised_convs_refuse_the_shortcut_and_stay_exact() -> None:
    torch.manual_seed(6)
    check_architecture(BiTBlock(), image_batches(6, (4, 3, 5, 5), 3),
                       {"conv1": "weight", "conv2": "weight", "head": "forward"},
                       fallbacks={"conv1": "StdConv2d", "conv2": "not affine in its weight"}, trace_estimator="shared")

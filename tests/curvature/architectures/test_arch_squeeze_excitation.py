"""An EfficientNet/MobileNetV3-style block: SiLU and a squeeze-excitation gate (sigmoid x features), a smooth
suffix: forms by double backward from each layer's output (prefix cached), traces by shared probes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches, randomise_norms


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class SEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.se = SqueezeExcite(8, 2)
        self.project = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.se(F.silu(self.bn(self.conv(x))))
        return self.head(self.project(h).mean((2, 3)))


def test_silu_and_squeeze_excitation_take_the_exact_smooth_path() -> None:
    torch.manual_seed(2)
    model = SEBlock()
    randomise_norms(model, 2)
    check_architecture(model, image_batches(2, (4, 3, 6, 6), 3),
                       {"conv": "output", "se.reduce": "output", "se.expand": "output", "project": "forward",
                        "head": "forward"},
                       fallbacks={"conv": "silu", "se.reduce": "silu", "se.expand": "sigmoid"},
                       trace_estimator="shared")

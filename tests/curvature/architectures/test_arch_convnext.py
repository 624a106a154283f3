"""A ConvNeXt-style block: depthwise 7x7 convolution, channels-last LayerNorm (permutes around nn.LayerNorm),
inverted-bottleneck Linears with GELU, layer scale (a learned per-channel gamma) and a residual add."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 2, stride=2)
        self.block = ConvNeXtBlock(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def test_a_convnext_block_extracts_exactly() -> None:
    torch.manual_seed(7)
    check_architecture(TinyConvNeXt(), image_batches(7, (3, 3, 8, 8), 3),
                       {"stem": "output", "block.dwconv": "output", "block.pwconv1": "output",
                        "block.pwconv2": "forward", "head": "forward"},
                       fallbacks={"block.dwconv": "norm", "block.pwconv1": "gelu"}, trace_estimator="shared")

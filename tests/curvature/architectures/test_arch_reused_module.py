"""A convolution called twice (shared weights): its forms sum both calls and their cross terms (the prefix
weight path from its first call on, never the J'H_oJ output shortcut), and output-space traces are refused."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(self.shared(h))
        h = F.relu(self.shared(h)) + h
        return self.head(h.flatten(1))


def test_a_module_called_twice_sums_its_calls_without_the_output_shortcut() -> None:
    torch.manual_seed(1)
    check_architecture(Reused(), image_batches(1, (4, 2, 5, 5), 3),
                       {"stem": "forward", "shared": "weight", "head": "forward"},
                       fallbacks={"shared": "called 2 times"}, trace_estimator="shared")

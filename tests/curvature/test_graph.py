"""Layer-graph tracing: Conv2d/Linear subclasses (EfficientNet's Conv2dStaticSamePadding) stay layers, and
a model whose graph cannot show its layers is reported loudly, never as "traced" with no edges."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from cetopt.problem.model import Edge, EdgeKind
from cetopt.curvature.graph import GraphTraceError, traced_edges


class Conv2dStaticSamePadding(nn.Conv2d):
    """As in the EfficientNet-PyTorch port: 'same' padding computed from the static input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, image_size: int = 16, **kw: object) -> None:
        super().__init__(cin, cout, kernel, stride, **kw)
        pad = max((math.ceil(image_size / stride) - 1) * stride + kernel - image_size, 0)
        self.static_padding = nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, 0)


class MyLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * 1.0, self.bias)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = Conv2dStaticSamePadding(4, 8, 1)
        self.depthwise = Conv2dStaticSamePadding(8, 8, 3, groups=8)
        self.project = Conv2dStaticSamePadding(8, 4, 1)
        self.shortcut = Conv2dStaticSamePadding(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.relu(self.depthwise(self.expand(x)))) + self.shortcut(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv2dStaticSamePadding(3, 4, 3)
        self.block = Block()
        self.head = MyLinear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


NAMES = ["stem", "block.expand", "block.depthwise", "block.project", "block.shortcut", "head"]


def test_subclassed_layers_are_traced_with_their_edges() -> None:
    edges = set(traced_edges(Net(), NAMES))
    expected = {Edge("stem", "block.expand"), Edge("block.expand", "block.depthwise"),
                Edge("block.depthwise", "block.project"), Edge("stem", "block.shortcut"),
                Edge("block.project", "head"), Edge("block.shortcut", "head"),
                Edge("block.expand", "block.shortcut", EdgeKind.SHARES_INPUT),
                Edge("block.project", "block.shortcut", EdgeKind.ADDS_WITH)}
    assert edges == expected


class WeightsUsedDirectly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.a(x), self.b.weight, self.b.bias)  # b never called as a module


class Unconnected(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(y)], dim=1)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(h if h.sum() > 0 else -h)


@pytest.mark.parametrize("model, match", [(WeightsUsedDirectly(), "never appear as module calls"),
                                          (Unconnected(), "no data flow links")])
def test_untraceable_layers_raise(model: nn.Module, match: str) -> None:
    with pytest.raises(GraphTraceError, match=match):
        traced_edges(model, ["a", "b"])


@pytest.mark.parametrize("model", [WeightsUsedDirectly(), DataDependent()])
def test_the_builder_says_it_could_not_trace(model: nn.Module, caplog: pytest.LogCaptureFixture) -> None:
    from cetopt.builders.assemble import layer_edges

    with caplog.at_level(logging.WARNING):
        edges, note = layer_edges(model, ["a", "b"], "toy")
    assert "could not trace" in note and "traced with torch.fx" not in note
    assert edges == (Edge("a", "b"),)
    assert any("could not trace" in r.getMessage() for r in caplog.records)

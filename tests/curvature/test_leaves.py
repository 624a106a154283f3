"""The leaf tracer and the affine check (cetopt.curvature.leaves): subclasses stay whole, even where their
forward cannot be traced; the check accepts affine maps and refuses scale-invariant or quadratic ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from cetopt.curvature.leaves import affine_problem, trace_with_leaves


class DynamicSame(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = max((math.ceil(x.shape[-1] / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - x.shape[-1], 0)
        return F.conv2d(F.pad(x, [pad // 2, pad - pad // 2] * 2), self.weight, self.bias, self.stride)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = DynamicSame(2, 3, 3, stride=2)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_subclass_whose_forward_fx_cannot_trace_stays_one_leaf() -> None:
    with pytest.raises(Exception):  # the premise: the default tracer goes into the subclass and fails
        fx.symbolic_trace(Net())
    model = Net()
    traced = trace_with_leaves(model)
    calls = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert calls == ["conv", "fc"]
    x = torch.randn(2, 2, 7, 7)
    torch.testing.assert_close(traced(x), model(x))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), double=st.booleans())
def test_affine_maps_pass_and_curved_ones_are_refused(seed: int, double: bool) -> None:
    dtype = torch.float64 if double else torch.float32
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=g).to(dtype)
    w = torch.randn(3, 5, generator=g).to(dtype)
    bias, adapter = torch.randn(3, generator=g).to(dtype), torch.randn(4, 3, generator=g).to(dtype)
    assert affine_problem(lambda e: F.linear(x, e, bias) + adapter, w) is None
    standardised = affine_problem(lambda e: F.linear(x, (e - e.mean()) / (e.std() + 1e-5)), w)
    assert standardised is not None and "not affine" in standardised
    assert affine_problem(lambda e: F.linear(x, e * e), w) is not None
    assert "not one floating-point tensor" in str(affine_problem(lambda e: (e, e), w))

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


def test_measured_changes_of_a_reused_module_swap_the_weight_in_every_call(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The measured signal's prefix path (weight swapped in both calls, from the first call on) equals full
    forwards with the weight copied into the model."""
    from cetopt.builders.signal_measured import measured_changes
    from cetopt.curvature import CurvatureOperator
    from cetopt.curvature.prefix import PrefixRunner

    torch.manual_seed(11)
    model = Reused().double().eval()
    data = image_batches(11, (4, 2, 5, 5), 3)
    g = torch.Generator().manual_seed(11)
    weights = {"shared": [model.shared.weight.detach() + 0.1 * torch.randn(model.shared.weight.shape, generator=g,
                                                                           dtype=torch.float64) for _ in range(2)]}
    op = CurvatureOperator(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), data, device="cpu")
    runs = []
    original = PrefixRunner.loss_with
    monkeypatch.setattr(PrefixRunner, "loss_with", lambda self, *a: runs.append(a[0]) or original(self, *a))
    cached = measured_changes(op, weights, prefix=True)
    assert runs == ["shared"] * 4  # 2 candidates x 2 batches from the record, not full forwards
    full = measured_changes(op, weights, prefix=False)
    torch.testing.assert_close(torch.as_tensor(cached["shared"]), torch.as_tensor(full["shared"]), rtol=1e-10,
                               atol=1e-14)
    assert abs(full["shared"]).max() > 1e-6

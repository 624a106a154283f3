"""capture_call records the model's first call inside its loss (names from forward's signature, outputs'
structure) and refuses what cannot become a graph; ModelCall.feed refuses calls the graph was not made for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.export.call import capture_call


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: float = 1.0, extra: torch.Tensor | None = None) -> dict:
        return {"logits": self.lin(x) * scale, "pair": (x.sum(1), x.mean(1))}


def test_capture_binds_names_constants_and_output_structure() -> None:
    model, x = TwoHeads(), torch.randn(5, 4)
    calls = []

    def loss(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return m(batch, scale=2.0)["logits"].sum() + m(batch)["logits"].sum()

    call = capture_call(model, loss, x)
    assert len(calls) == 1  # stopped at the first model call
    assert call.inputs == ("x",) and call.constants == {"scale": 2.0} and call.outputs == 3
    flat = [t.numpy() for t in (torch.ones(5, 3), torch.zeros(5), torch.ones(5))]
    rebuilt = call.rebuild(flat)
    assert set(rebuilt) == {"logits", "pair"} and rebuilt["pair"][1].shape == (5,)
    assert set(call.feed((x,), {"scale": 2.0})) == {"x"}
    with pytest.raises(ProblemError, match="exported for the call"):
        call.feed((x,), {"scale": 3.0})  # the graph holds scale=2.0 as a constant
    with pytest.raises(ProblemError, match="exported for the call"):
        call.feed((x,), {"scale": 2.0, "extra": x})
    with pytest.raises(ProblemError, match="outputs"):
        call.rebuild(flat[:2])


def test_capture_refuses_a_loss_without_the_model_and_non_tensor_outputs() -> None:
    with pytest.raises(ProblemError, match="never called the model"):
        capture_call(nn.Linear(2, 2), lambda m, b: b.sum(), torch.ones(2, 2))

    class Texty(nn.Module):
        def forward(self, x: torch.Tensor) -> str:
            return "no"

    with pytest.raises(ProblemError, match="export needs tensors"):
        capture_call(Texty(), lambda m, b: m(b), torch.ones(2))

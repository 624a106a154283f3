"""LoRA-style layers: loralib's ``LoRALinear(nn.Linear)`` (adapters as extra parameters in the subclass's own
forward) and a peft-style wrapper holding a base nn.Linear next to two adapter Linears. The subclass's output
is affine in its weight with the adapter term constant: the shortcut holds with dz = z(e) - z(0) (the adapter
and bias cancel; taking z(e) with the bias zeroed, as a plain Linear allows, would count the adapter term in
dz and be wrong), and forward mode runs where the suffix is piecewise linear."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arch_check import check_architecture, image_batches


class LoRALinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, rank: int = 2, alpha: float = 4.0) -> None:
        super().__init__(n_in, n_out)
        self.lora_A = nn.Parameter(torch.randn(rank, n_in) * 0.3)
        self.lora_B = nn.Parameter(torch.randn(n_out, rank) * 0.3)  # non-zero: a trained adapter
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


class PeftLinear(nn.Module):
    """A wrapper: a base Linear plus adapter Linears, summed."""

    def __init__(self, n_in: int, n_out: int, rank: int = 2) -> None:
        super().__init__()
        self.base_layer = nn.Linear(n_in, n_out)
        self.lora_A = nn.Linear(n_in, rank, bias=False)
        self.lora_B = nn.Linear(rank, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * 0.5


class LoRAMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = LoRALinear(6, 8)
        self.fc2 = PeftLinear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.fc3 = LoRALinear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = F.relu(self.fc2(h))
        h = F.relu(self.fc3(self.norm(h)))
        return self.head(h)


def test_lora_layers_take_the_shortcut_with_adapters_cancelled() -> None:
    torch.manual_seed(4)
    check_architecture(LoRAMLP(), image_batches(4, (6, 6), 3),
                       {"fc1": "output", "fc2.base_layer": "output", "fc2.lora_A": "output", "fc2.lora_B": "output",
                        "fc3": "forward", "head": "forward"},
                       fallbacks={"fc1": "norm", "fc2.lora_A": "norm"}, trace_estimator="shared")


def test_a_zeroed_bias_tangent_would_be_wrong_for_lora() -> None:
    """The counter-example the affine check guards against: z(e) with the bias zeroed keeps the adapter term."""
    torch.manual_seed(5)
    layer = LoRALinear(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    e = torch.randn(3, 4, dtype=torch.float64)
    zeroed = torch.func.functional_call(layer, {"weight": e, "bias": torch.zeros(3, dtype=torch.float64)}, (x,))
    differenced = torch.func.functional_call(layer, {"weight": e}, (x,)) - \
        torch.func.functional_call(layer, {"weight": torch.zeros_like(e)}, (x,))
    torch.testing.assert_close(differenced, x @ e.T)
    assert (zeroed - x @ e.T).abs().max() > 0.1


class NestedLoRALinear(nn.Linear):
    """Older peft style: an nn.Linear subclass whose adapters are nn.Linear children (in a ModuleDict)."""

    def __init__(self, n_in: int, n_out: int, rank: int = 2) -> None:
        super().__init__(n_in, n_out)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(n_in, rank, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, n_out, bias=False)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora_B["default"](self.lora_A["default"](x)) * 0.5


class NestedMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = NestedLoRALinear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(x)))


def test_adapters_inside_a_leaf_take_their_forms_from_hooked_outputs() -> None:
    """The subclass stays one leaf, so its adapter Linears are no calls in the trace: forward hooks serve them."""
    torch.manual_seed(14)
    check_architecture(NestedMLP(), image_batches(14, (6, 6), 3),
                       {"fc": "output", "fc.lora_A.default": "hooked", "fc.lora_B.default": "hooked",
                        "head": "forward"},
                       fallbacks={"fc": "tanh", "fc.lora_A.default": "not called in the traced graph"})

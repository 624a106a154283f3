"""Which weights of a torch model are quantisable: Linear and Conv1d/2d by default, or modules a user names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError

QUANTISABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerRef:
    """One quantisable weight.

    Attributes:
        name: the module's dotted path in the model (``layer1.0.conv1``).
        module: the module itself.
        weight: its weight parameter (shape as in torch: (out, in, ...)).
    """

    name: str
    module: nn.Module
    weight: nn.Parameter

    @property
    def params(self) -> int:
        return int(self.weight.numel())


def find_layers(model: nn.Module, include: Sequence[str] | None = None, *,
                exclude: Sequence[str] = ()) -> list[LayerRef]:
    """The quantisable layers of ``model`` in definition order.

    Args:
        model: any torch module.
        include: module names to use instead of the default (Linear/Conv modules); each must have a
            ``weight`` parameter.
        exclude: module names to leave out (e.g. an unused pooler).

    Raises:
        ProblemError: when no layer is found, or a named module does not exist or has no weight.
    """
    modules = dict(model.named_modules())
    if include is not None:
        refs = []
        for name in include:
            if name not in modules:
                raise ProblemError(f"model has no module {name!r}", field="include")
            weight = getattr(modules[name], "weight", None)
            if not isinstance(weight, nn.Parameter):
                raise ProblemError(f"module {name!r} has no weight parameter", field="include")
            refs.append(LayerRef(name, modules[name], weight))
    else:
        refs = [LayerRef(name, module, module.weight) for name, module in modules.items()
                if isinstance(module, QUANTISABLE) and isinstance(getattr(module, "weight", None), nn.Parameter)]
    refs = [r for r in refs if r.name not in set(exclude) and r.weight.requires_grad]
    if not refs:
        raise ProblemError("the model has no quantisable layers (Linear/Conv with a trainable weight); "
                           "name the modules to use with include=[...]", field="model")
    return refs


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])

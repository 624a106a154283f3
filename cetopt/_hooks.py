"""Run a model over batches with forward pre-hooks on some of its modules, the hooks removed afterwards
whatever happens: the one place cetopt observes layer inputs (coverage of embedding rows, layer-input Gram
matrices, activation ranges)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn


def observe_inputs(model: nn.Module, hooks: Mapping[str, Callable[[nn.Module, tuple[Any, ...]], Any]],
                   batches: Sequence[Any], run: Callable[[nn.Module, Any], Any]) -> None:
    """Call ``run(model, batch)`` for each batch under ``torch.no_grad()`` with ``hooks[name]`` as a forward
    pre-hook of module ``name`` (``hook(module, args)``, args the positional inputs); every hook is removed on the
    way out, also when a hook or the model raises."""
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(hook) for name, hook in hooks.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                run(model, batch)
    finally:
        for handle in handles:
            handle.remove()

"""Temporary changes to a model that are undone whatever happens: forward pre-hooks on some of its modules (the
one place cetopt observes layer inputs: coverage of embedding rows, layer-input Gram matrices, activation ranges)
and eval mode. Torch only, so every package that runs a model can use them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

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


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (BatchNorm uses running statistics) and restore its flags after."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag

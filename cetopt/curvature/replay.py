"""The torch.fx pieces prefix caching runs a traced model with: a stand-in for the model inside ``loss_fn``, an
interpreter that records every node's value, one that reruns only the nodes downstream of a layer with its
weight (or its output) swapped, and the graph facts they need (downstream sets, which values carry floats)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import fx, nn



class ModelProxy(nn.Module):
    """Stands in for the model inside ``loss_fn(model, batch)``; counts the calls."""

    def __init__(self, run: Callable[..., Any]) -> None:
        super().__init__()
        self.run = run
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("prefix caching needs positional model inputs")
        self.calls += 1
        self.args = args
        return self.run(*args)


class Recorder(fx.Interpreter):
    """Runs the traced graph and keeps every node's value (detached)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=False)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n] = value.detach() if isinstance(value, torch.Tensor) else value
        return value


class SuffixRunner(fx.Interpreter):
    """Runs only the nodes downstream of one layer, with that layer's weight replaced by ``weight`` in every call
    of the module that runs it (``site``: that module's call target and the weight's path inside it), or, with
    ``output``, that module's one call replaced by the tensor ``weight``."""

    def __init__(self, module: fx.GraphModule, values: dict[fx.Node, Any], downstream: set[fx.Node],
                 site: tuple[str, str], weight: torch.Tensor, output: bool = False) -> None:
        super().__init__(module)
        self.values, self.downstream, self.weight, self.at_output = values, downstream, weight, output
        self.target, self.key = site

    def run_node(self, n: fx.Node) -> Any:
        if n not in self.downstream and n.op != "output":
            return self.values[n]
        return super().run_node(n)

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        if target == self.target and self.at_output:
            return self.weight
        if target == self.target:
            module = self.module.get_submodule(target)
            return torch.func.functional_call(module, {self.key: self.weight}, args, kwargs, strict=False)
        return super().call_module(target, args, kwargs)


def plain_lookup(module: nn.Module) -> bool:
    """True for torch's own nn.Embedding without max_norm: its output is rows of its weight, linear in it."""
    return type(module) is nn.Embedding and module.max_norm is None  # type: ignore[attr-defined]


def carries_float(value: Any) -> bool:
    """True when ``value`` (a node's recorded value) holds a floating-point tensor anywhere."""
    if isinstance(value, torch.Tensor):  # the common case, without pytree's overhead
        return value.is_floating_point()
    if value is None or isinstance(value, (bool, int, float, str, torch.Size, torch.dtype, torch.device)):
        return False
    return any(isinstance(t, torch.Tensor) and torch.is_floating_point(t)
               for t in torch.utils._pytree.tree_leaves(value))


def downstream_of(start: fx.Node) -> set[fx.Node]:
    """``start`` and every node that uses its value, directly or not."""
    seen = {start}
    stack = [start]
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen

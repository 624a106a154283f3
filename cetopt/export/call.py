"""How a spec's model is called, recorded from its own loss: the arguments of the first forward call that
``loss_fn(model, calibration[0])`` makes, bound to the names of ``model.forward``'s parameters, and the
structure of what it returns. An exported graph takes the tensor arguments as inputs named after those
parameters (all dimensions dynamic) and returns the flattened outputs; :meth:`ModelCall.feed` and
:meth:`ModelCall.rebuild` translate a later call of the torch model into a runtime call and back.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils import _pytree as pytree

from cetopt.errors import ProblemError


class _Captured(Exception):
    """Raised by the capture hook to stop the loss after the model's first call."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        super().__init__("captured")
        self.args, self.kwargs = args, kwargs


@dataclass(frozen=True)
class ModelCall:
    """One recorded call of a model.

    Attributes:
        args, kwargs: the call, bound to ``model.forward``'s signature.
        inputs: names of the tensor arguments, in signature order (the exported graph's inputs).
        constants: the non-tensor arguments (the exporter bakes them into the graph).
        outputs: how many tensors the call returns, flattened.
        treespec: the structure of what it returns (torch.utils._pytree).
        signature: ``model.forward``'s signature.
    """

    args: tuple
    kwargs: Mapping[str, Any]
    inputs: tuple[str, ...]
    constants: Mapping[str, Any]
    outputs: int
    treespec: Any
    signature: inspect.Signature = field(repr=False)

    @property
    def output_names(self) -> list[str]:
        return [f"output_{i}" for i in range(self.outputs)]

    def feed(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """A later call's tensor arguments as numpy arrays by input name.

        Raises:
            ProblemError: the call passes other arguments than the recorded one (another tensor set, or a
                different non-tensor value, which the graph holds as a constant).
        """
        bound = self.signature.bind(*args, **kwargs).arguments
        tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
        others = {k: v for k, v in bound.items() if not isinstance(v, torch.Tensor)}
        if tuple(tensors) != self.inputs or set(others) != set(self.constants) or any(
                others[k] != self.constants[k] for k in others):
            raise ProblemError(f"the model was called with {sorted(bound)}, but the graph was exported for the call "
                               f"in its loss (tensors {list(self.inputs)}, constants {dict(self.constants)})",
                               field="inputs")
        return {k: v.detach().cpu().numpy() for k, v in tensors.items()}

    def rebuild(self, outputs: list[Any]) -> Any:
        """The runtime's flat outputs as the torch model returns them (tensors, in the same structure)."""
        if len(outputs) != self.outputs:
            raise ProblemError(f"the graph returned {len(outputs)} outputs where the model returns {self.outputs}",
                               field="outputs")
        return pytree.tree_unflatten([torch.from_numpy(o) for o in outputs], self.treespec)


def capture_call(model: nn.Module, loss_fn: Any, batch: Any) -> ModelCall:
    """The first call ``loss_fn(model, batch)`` makes to ``model`` (stopped there), and what ``model``
    returns for it.

    Raises:
        ProblemError: the loss never calls the model, or the model returns something other than tensors in
            tuples, lists and dicts.
    """
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise _Captured(args, kwargs)

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            loss_fn(model, batch)
    except _Captured as captured:
        args, kwargs = captured.args, captured.kwargs
    else:
        raise ProblemError("loss_fn(model, batch) never called the model, so its inputs are unknown",
                           field="ModelSpec.loss_fn")
    finally:
        handle.remove()
    signature = inspect.signature(model.forward)
    bound = signature.bind(*args, **kwargs)
    with torch.no_grad():
        out = model(*bound.args, **bound.kwargs)
    leaves, treespec = pytree.tree_flatten(out)
    if not leaves or not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        raise ProblemError(f"the model returns {type(out).__name__}; export needs tensors (in tuples, lists or "
                           "dicts)", field="outputs")
    tensors = tuple(k for k, v in bound.arguments.items() if isinstance(v, torch.Tensor))
    constants = {k: v for k, v in bound.arguments.items() if not isinstance(v, torch.Tensor)}
    return ModelCall(args=tuple(bound.args), kwargs=dict(bound.kwargs), inputs=tensors, constants=constants,
                     outputs=len(leaves), treespec=treespec, signature=signature)

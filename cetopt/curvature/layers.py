"""Which weights of a torch model are quantisable: Linear, Conv1d/2d/3d and Embedding by default (subclasses
included) and nn.MultiheadAttention's projection Parameters (a third of its weights: ``in_proj_weight``, or
q/k/v_proj_weight), or modules and Parameters a user names. A layer is named by its module's path (its weight is
``<name>.weight``) or, for a bare Parameter, by the Parameter's own path (:func:`weight_key`, :func:`layer_weight`).

Embedding tables are in by default: in a text model they are often most of the weights (12.1 M of MiniLM's
22.7 M), and a plan that left them in FP32 would compress far less than the ratio of its planned layers suggests.
Each row of a table is one channel of the per-channel grid (one scale per token), the layout of a Linear's output
channels. A lookup is linear in its table, so the output-tangent shortcut of the curvature passes is exact for it
(dz = e[idx]). Rows no calibration token selects carry no measured curvature: the costs estimate the loss on text
whose tokens are distributed as the calibration text's. Pass ``exclude`` (a ModelSpec's ``exclude``) to keep a
table in FP32; the coverage report lists every weight kept in FP32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError

log = logging.getLogger(__name__)
# nn.MultiheadAttention's projections held as bare Parameters (F.multi_head_attention_forward reads them): the
# packed (3 dim, dim) in_proj_weight, or q/k/v_proj_weight when key and value have other sizes; its out_proj is a
# Linear and found as one
BARE_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
QUANTISABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


@dataclass(frozen=True)
class LayerRef:
    """One quantisable weight.

    Attributes:
        name: the module's dotted path in the model (``layer1.0.conv1``), or for a bare weight Parameter the
            parameter's path (``encoder.self_attn.in_proj_weight``: nn.MultiheadAttention's packed q/k/v
            projection, rows = output channels as in a Linear).
        module: the module itself (for a bare Parameter: the module that holds it).
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
        include: module names to use instead of the default (Linear/Conv/Embedding modules); each must have a
            ``weight`` parameter.
        exclude: module names to leave out (e.g. an unused pooler).

    Raises:
        ProblemError: when no layer is found, or a named module does not exist or has no weight.
    """
    modules = dict(model.named_modules())
    if include is not None:
        refs = []
        for name in include:
            owner, _, attr = name.rpartition(".")
            if name not in modules and isinstance(getattr(modules.get(owner), attr, None), nn.Parameter):
                refs.append(LayerRef(name, modules[owner], getattr(modules[owner], attr)))  # a bare Parameter
                continue
            if name not in modules:
                raise ProblemError(f"model has no module or parameter {name!r}", field="include")
            weight = getattr(modules[name], "weight", None)
            if not isinstance(weight, nn.Parameter):
                raise ProblemError(f"module {name!r} has no weight parameter", field="include")
            refs.append(LayerRef(name, modules[name], weight))
    else:
        refs = []
        for name, module in modules.items():
            if (isinstance(module, QUANTISABLE) and isinstance(getattr(module, "weight", None), nn.Parameter)
                    and not _renormed(name, module)):
                refs.append(LayerRef(name, module, module.weight))
            elif isinstance(module, nn.MultiheadAttention):
                refs += [LayerRef(f"{name}.{attr}" if name else attr, module, getattr(module, attr))
                         for attr in BARE_WEIGHTS if isinstance(getattr(module, attr, None), nn.Parameter)]
    refs = [r for r in refs if r.name not in set(exclude) and r.weight.requires_grad]
    if not refs:
        raise ProblemError("the model has no quantisable layers (Linear/Conv/Embedding with a trainable weight); "
                           "name the modules to use with include=[...]", field="model")
    return refs


def weight_key(model: nn.Module, name: str) -> str:
    """The state-dict key of layer ``name``'s weight: ``<name>.weight`` for a module, ``name`` for a bare
    Parameter (see :class:`LayerRef`)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return name
    return f"{name}.weight" if name and isinstance(getattr(module, "weight", None), torch.Tensor) else name


def layer_weight(model: nn.Module, name: str) -> nn.Parameter:
    """Layer ``name``'s weight Parameter (a module's ``weight``, or a bare Parameter by its path).

    Raises:
        ProblemError: the model has no such layer.
    """
    try:
        weight = model.get_parameter(weight_key(model, name))
    except AttributeError:
        weight = None
    if not isinstance(weight, nn.Parameter):
        raise ProblemError(f"the model has no layer {name!r} with a weight", field="layers")
    return weight


def _renormed(name: str, module: nn.Module) -> bool:
    """True (and an INFO line) for an Embedding with ``max_norm``: its forward rewrites the table's rows in place,
    so neither a swapped-in weight nor a quantised one survives a lookup; it stays in FP32."""
    if isinstance(module, nn.Embedding) and module.max_norm is not None:
        log.info("embedding %s has max_norm=%s (its forward renormalises rows in place): kept in FP32", name,
                 module.max_norm)
        return True
    return False


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])

"""FP=xINT's expansion of a whole network into K low-bit basis models, at three granularities.

Every quantised layer's weight is expanded by cetopt.quant.series: W ~ sum_k s_k Q_k, where Q_k are b-bit
integer codes (minus the grid's zero code) and s_k the term's float32 per-channel scales, each term the b-bit
rounding of the residual R_k = W - sum_{j<k} s_j Q_j. The k-th *basis model* f_k is the network with every
quantised weight replaced by its k-th term s_k Q_k. What the basis models hold besides the quantised weights:

- **Additive offsets** (every parameter or buffer whose name ends in ``bias``, and BatchNorm's
  ``running_mean``) are carried by basis 0 only and are zero in bases 1..K-1.
- **Multiplicative parameters** (every other floating entry: weights of layers left unquantised, norm scales,
  ``running_var``) are *shared*: every basis model holds the original value. Integer buffers are copied.

With this rule a network whose output is affine in the quantised weights (one quantised layer, the first to
see the input, only affine maps after it) is reproduced exactly by the sum of its basis models' outputs (an
offset *before* the quantised layer would be missing from bases 1..K-1), and the *additive* parameter tuples
(:meth:`BasisExpansion.additive_tuple`: shared entries zero in bases 1..K-1) AbelianAdd (cetopt.quant.abelian)
back to the expanded model's tuple.

The three granularities compute the same expansion in three places:

- ``tensor``: the terms are summed per tensor, W_K = sum_k s_k Q_k, and one model runs with the summed weights
  (:func:`tensor_model`; (a) in docs/fp-xint.md). One model, K x b bits per weight.
- ``layer``: every quantised layer runs its K basis layers, one per term (an integer kernel on Q_k, scaled by
  s_k), on the same input and sums their outputs, bias added once (:func:`layer_model`, (b)). A Linear or
  Conv layer is linear in its weight, so this equals ``tensor`` up to float rounding; the network between
  layers is unchanged.
- ``model``: the K basis models each run the whole network and their outputs are summed,
  F_K(x) = sum_k f_k(x) (:func:`model_sum`, (c)). This is *not* the expanded model once two quantised layers
  follow each other: even without non-linearities, sum_k W2_k W1_k x keeps the "diagonal" products and drops
  the cross terms W2_j W1_i (i != j) of (sum_k W2_k)(sum_k W1_k) x (all K^L of them would be needed), and
  non-linearities (ReLU, pooling) between the layers add a second error. Its error is measured, not assumed
  (benchmarks/fp_xint.py).

Both summed evaluations run the K basis computations batched (``torch.func.vmap`` over stacked weights or
stacked model states), and :func:`model_sum` can run them one by one for the check against the sequential sum.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.quant.series import Series, series_expand

GRANULARITIES = ("tensor", "layer", "model")


def is_additive(name: str) -> bool:
    """Whether state entry ``name`` is an additive offset (carried by basis 0 only): biases and running means."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.endswith("bias") or leaf == "running_mean"


@dataclass(frozen=True)
class BasisExpansion:
    """A network expanded into K basis models.

    Attributes:
        bits: bits per term (b).
        terms: K.
        layers: the quantised layers' module names.
        weight_keys: layer name -> its weight's state_dict key.
        series: weight key -> its :class:`~cetopt.quant.series.Series` (the K terms, codes and scales).
        states: K state dicts (same keys, shapes, dtypes as the model's): basis model k's full state.
        shared: state keys shared by every basis model (multiplicative, see the module docstring).
    """

    bits: int
    terms: int
    layers: tuple[str, ...]
    weight_keys: dict[str, str]
    series: dict[str, Series]
    states: tuple[dict[str, torch.Tensor], ...]
    shared: frozenset[str]

    def expanded_weights(self) -> dict[str, torch.Tensor]:
        """Layer name -> sum_k s_k Q_k (the original dtype): the tensor-granularity weights."""
        return {n: self.series[k].weight for n, k in self.weight_keys.items()}

    def additive_tuple(self, k: int) -> dict[str, torch.Tensor]:
        """Basis k's floating entries with the shared ones zero in bases k >= 1: the K tuples AbelianAdd to the
        tensor-granularity model's parameter tuple."""
        return {n: (torch.zeros_like(v) if k and n in self.shared else v) for n, v in self.states[k].items()
                if torch.is_floating_point(v)}

    def size_bits(self) -> int:
        """Packed storage of the quantised weights: K x (values x b + scales x 32)."""
        return sum(s.size_bits for s in self.series.values())


def expand_model(model: nn.Module, bits: int, terms: int, *, layers: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), spec: QuantizerSpec = QuantizerSpec()) -> BasisExpansion:
    """Expand every quantisable layer of ``model`` (cetopt.curvature.layers.find_layers: Linear, Conv,
    Embedding; or ``layers``) into ``terms`` terms of ``bits`` bits and build the K basis models' states."""
    from cetopt.curvature.layers import find_layers, weight_key

    names = tuple(r.name for r in find_layers(model, layers, exclude=exclude))
    keys = {n: weight_key(model, n) for n in names}
    state = model.state_dict()
    series = {}
    for name, key in keys.items():
        if key not in state:
            raise ProblemError(f"layer {name!r}: its weight {key!r} is not in the model's state_dict",
                               field="layers")
        series[key] = series_expand(state[key], bits, terms, spec)
    quantised = set(keys.values())
    shared = frozenset(k for k, v in state.items() if k not in quantised and not is_additive(k))
    states = []
    for k in range(terms):
        basis: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key in quantised:
                basis[key] = series[key].parts[k].weight.to(value.dtype)
            elif k and is_additive(key) and torch.is_floating_point(value):
                basis[key] = torch.zeros_like(value)
            else:
                basis[key] = value.detach().clone()
        states.append(basis)
    return BasisExpansion(bits=bits, terms=terms, layers=names, weight_keys=keys, series=series, states=tuple(states),
                          shared=shared)


def _load(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out.eval()


def tensor_model(model: nn.Module, expansion: BasisExpansion) -> nn.Module:
    """(a) One model whose quantised weights are the summed terms sum_k s_k Q_k."""
    state = dict(model.state_dict())
    for key, s in expansion.series.items():
        state[key] = s.weight.to(state[key].dtype)
    return _load(model, state)


def basis_models(model: nn.Module, expansion: BasisExpansion) -> list[nn.Module]:
    """The K basis models f_k (module docstring), each a runnable copy of ``model``."""
    return [_load(model, s) for s in expansion.states]


class SeriesLayer(nn.Module):
    """A Linear/Conv/Embedding layer run as K basis layers on the same input, outputs summed.

    ``weights`` (K, *weight shape) holds the terms s_k Q_k; the bias (when the layer has one) is added once.
    The K layer calls run batched through ``torch.func.vmap`` over the stacked weights."""

    def __init__(self, layer: nn.Module, weights: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("weights", weights)
        bias = getattr(layer, "bias", None)
        self.has_bias = isinstance(bias, torch.Tensor)
        if self.has_bias:
            stacked = torch.zeros((weights.shape[0], *bias.shape), dtype=bias.dtype)
            stacked[0] = bias.detach()
            self.register_buffer("biases", stacked)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        from torch.func import functional_call, vmap

        if self.has_bias:
            def one(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return functional_call(self.layer, {"weight": w, "bias": b}, args, kwargs)

            outputs = vmap(one)(self.weights, self.biases)
        else:
            outputs = vmap(lambda w: functional_call(self.layer, {"weight": w}, args, kwargs))(self.weights)
        return outputs.sum(dim=0)


def layer_model(model: nn.Module, expansion: BasisExpansion) -> nn.Module:
    """(b) A copy of ``model`` whose quantised layers are :class:`SeriesLayer`: K basis layers, outputs summed."""
    out = copy.deepcopy(model).eval()
    for name, key in expansion.weight_keys.items():
        if not key.endswith(".weight") or key[: -len(".weight")] != name:
            raise ProblemError(f"layer granularity needs a module with a 'weight' parameter, {name!r} holds {key!r}",
                               field="layers")
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = getattr(parent, child)
        stacked = torch.stack([p.weight.to(layer.weight.dtype) for p in expansion.series[key].parts])
        setattr(parent, child, SeriesLayer(layer, stacked))
    return out


def model_sum(model: nn.Module, expansion: BasisExpansion, *args: Any, parallel: bool = True) -> torch.Tensor:
    """(c) sum_k f_k(*args): the K basis models' outputs summed. ``parallel``: the K models run as one batched
    call (``torch.func.vmap`` of ``functional_call`` over the K states stacked); else one after another."""
    if not parallel:
        with torch.no_grad():
            return torch.stack([m(*args) for m in basis_models(model, expansion)]).sum(dim=0)
    from torch.func import functional_call, vmap

    base = copy.deepcopy(model).eval()
    keys = list(expansion.states[0])
    stacked = {k: torch.stack([s[k] for s in expansion.states]) for k in keys}
    with torch.no_grad():
        return vmap(lambda state: functional_call(base, state, args))(stacked).sum(dim=0)


def granularity_output(model: nn.Module, expansion: BasisExpansion, granularity: str, *args: Any) -> torch.Tensor:
    """The expanded network's output at ``granularity`` ("tensor", "layer" or "model")."""
    if granularity == "tensor":
        with torch.no_grad():
            return tensor_model(model, expansion)(*args)
    if granularity == "layer":
        with torch.no_grad():
            return layer_model(model, expansion)(*args)
    if granularity == "model":
        return model_sum(model, expansion, *args)
    raise ProblemError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}",
                       field="granularity")

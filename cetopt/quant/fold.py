"""BatchNorm folding: an eval-mode BatchNorm that reads only a convolution's (or Linear's) output is a per-channel
affine map, so it folds into that layer exactly: W'_c = W_c g_c / sqrt(v_c + eps), b'_c = (b_c - m_c) g_c /
sqrt(v_c + eps) + beta_c, and the BatchNorm becomes nn.Identity.

Quantising the folded weight is what a runtime that folds at load time (onnxruntime does) computes with. On a per
output channel grid (the default: one scale per row, symmetric or not), folding multiplies each row by a constant
and the grid with it, so Q(s W_c) = s Q(W_c) up to float rounding: the codes, the curvature costs
(e' H e is invariant to the rescaling) and the plan do not change; only the stored FP32 parameters do (one bias per
channel instead of BatchNorm's weight, bias, running mean and variance). On a per-tensor grid folding changes the
errors. benchmarks/bn_fold.py measures both.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import fx, nn

if TYPE_CHECKING:
    from cetopt.modelspec import ModelSpec

log = logging.getLogger(__name__)
FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, BatchNorm) module names where the BatchNorm's only input is the layer's output and the layer's
    output goes nowhere else, from a torch.fx trace (:class:`cetopt.curvature.leaves.LeafTracer`); [] with an INFO
    line when the model does not trace."""
    from cetopt.curvature.leaves import trace_with_leaves

    try:
        graph = trace_with_leaves(model).graph
    except Exception as err:  # noqa: BLE001 - fx raises many types on data-dependent code
        log.info("BatchNorm folding off: torch.fx cannot trace %s (%s)", type(model).__name__, type(err).__name__)
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (isinstance(source, fx.Node) and source.op == "call_module" and type(modules.get(source.target)) in FOLDABLE
                and len(source.users) == 1 and calls[source.target] == 1 and calls[node.target] == 1):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, tuple[tuple[str, str], ...]]:
    """(a copy of ``model`` with every :func:`foldable_pairs` BatchNorm folded into its layer and replaced by
    nn.Identity, the pairs folded). Uses the running statistics (eval mode); the model is left unchanged.

    A layer without a bias gains one (the folded shift), so its state dict gains ``<layer>.bias`` and loses the
    BatchNorm's entries."""
    pairs = foldable_pairs(model)
    out = copy.deepcopy(model)
    for layer_name, bn_name in pairs:
        layer, bn = out.get_submodule(layer_name), out.get_submodule(bn_name)
        with torch.no_grad():
            mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
            var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
            gain = torch.rsqrt(var.double() + bn.eps)
            if bn.affine:
                gain = gain * bn.weight.double()
            shift = -mean.double() * gain + (bn.bias.double() if bn.affine else 0.0)
            bias = layer.bias.double() * gain if layer.bias is not None else torch.zeros_like(gain)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.copy_((layer.weight.double() * gain.reshape(shape)).to(layer.weight.dtype))
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(gain.shape, dtype=layer.weight.dtype, device=layer.weight.device))
            layer.bias.copy_((bias + shift).to(layer.bias.dtype))
        parent, _, child = bn_name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, nn.Identity())
    if pairs:
        log.info("folded %d BatchNorm layer(s) into the layers before them", len(pairs))
    return out, tuple(pairs)


FOLD_KEY = "fold_bn"  # problem metadata / plan extra: True when the model's BatchNorms were folded first


def fold_spec(spec: "ModelSpec") -> "ModelSpec":
    """``spec`` with its model's BatchNorms folded (:func:`fold_batchnorm`) and ``metadata["fold_bn"] = True``
    (problems built on it record it, their plans carry it, and ``cetopt apply`` / :func:`load_compressed
    <cetopt.artifact.load_compressed>` fold the model again before applying); ``spec`` itself when there is
    nothing to fold. The spec's own model is unchanged."""
    from dataclasses import replace

    folded, pairs = fold_batchnorm(spec.model)
    if not pairs:
        return spec
    return replace(spec, model=folded, metadata={**spec.metadata, FOLD_KEY: True, "fold_bn_count": len(pairs)})


def folded_if_planned(spec: "ModelSpec", extra: Mapping[str, Any]) -> "ModelSpec":
    """``spec`` folded when a plan's ``extra`` (or a problem's metadata) says its model was (:data:`FOLD_KEY`), and
    not already; else ``spec``."""
    if extra.get(FOLD_KEY) and not spec.metadata.get(FOLD_KEY):
        return fold_spec(spec)
    return spec

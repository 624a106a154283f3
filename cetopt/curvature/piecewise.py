"""Which fx nodes are piecewise linear in the values that depend on a layer: where every node downstream of a
layer's output is, the model output is locally linear in that output, the loss's Hessian in the layer's weight is
exactly the Gauss-Newton matrix, and forward-mode forms and output-space traces are exact
(cetopt.curvature.prefix, cetopt.curvature.output_traces)."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

# Modules whose output is piecewise linear in their input (their parameters and buffers being constants): the
# forward-mode forms are exact through them. BatchNorm and dropout only in eval mode.
PIECEWISE_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Identity, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
    nn.ConvTranspose2d, nn.ConvTranspose3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.PReLU, nn.MaxPool1d,
    nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.Upsample)
EVAL_ONLY_MODULES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
_F = torch.nn.functional
# functions linear or piecewise linear in every tensor argument
PIECEWISE_LINEAR_FUNCTIONS = frozenset({
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, getattr, torch.add, torch.sub,
    torch.neg, torch.flatten, torch.cat, torch.stack, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.mean, torch.sum, torch.relu, torch.clamp, torch.narrow, torch.chunk, torch.split,
    _F.relu, _F.relu6, _F.hardtanh, _F.leaky_relu, _F.adaptive_avg_pool1d, _F.adaptive_avg_pool2d,
    _F.adaptive_avg_pool3d, _F.avg_pool1d, _F.avg_pool2d, _F.avg_pool3d, _F.max_pool1d, _F.max_pool2d,
    _F.max_pool3d, _F.adaptive_max_pool1d, _F.adaptive_max_pool2d, _F.adaptive_max_pool3d, _F.pad})
# linear in each argument separately: piecewise linear while at most one argument depends on the layer
PRODUCT_FUNCTIONS = frozenset({operator.mul, operator.matmul, torch.mul, torch.matmul, torch.bmm, _F.linear,
                               _F.conv1d, _F.conv2d, _F.conv3d})
DIVISION_FUNCTIONS = frozenset({operator.truediv, torch.div})
PIECEWISE_LINEAR_METHODS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "permute", "transpose", "contiguous", "size", "dim",
    "squeeze", "unsqueeze", "mean", "sum", "relu", "clamp", "clamp_min", "clamp_max", "add", "sub", "neg", "expand",
    "expand_as", "t", "chunk", "split", "narrow", "__getitem__"})
PRODUCT_METHODS = frozenset({"mul", "matmul", "bmm"})
DIVISION_METHODS = frozenset({"div"})


_RULES = {"call_function": (PIECEWISE_LINEAR_FUNCTIONS, PRODUCT_FUNCTIONS, DIVISION_FUNCTIONS),
          "call_method": (PIECEWISE_LINEAR_METHODS, PRODUCT_METHODS, DIVISION_METHODS)}


def piecewise_linear_node(traced: fx.GraphModule, n: fx.Node, downstream: set[fx.Node]) -> bool:
    """True when node ``n`` of ``traced`` is piecewise linear in the values of the ``downstream`` nodes (those
    that depend on the layer): a listed module (BatchNorm and dropout in eval mode), function or method, a
    product with at most one factor downstream, a division whose divisor is not downstream."""
    def dependent(values: Any) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg(values, lambda a: found.append(a) if a in downstream else None)  # type: ignore[func-returns-value]
        return found

    if n.op in ("output", "placeholder", "get_attr"):
        return True
    if n.op == "call_module":
        module = traced.get_submodule(n.target)  # type: ignore[arg-type]
        if isinstance(module, EVAL_ONLY_MODULES):
            return not module.training
        return type(module) in PIECEWISE_LINEAR_MODULES
    if n.op not in _RULES:
        return False
    linear, products, divisions = _RULES[n.op]
    if n.target in linear:
        return True
    if n.target in products:
        return len(dependent((n.args, n.kwargs))) <= 1
    if n.target in divisions:
        return not dependent((n.args[1:], n.kwargs))
    return False

"""The layer graph of a torch model, traced with torch.fx: which quantisable layer feeds which, which read
the same tensor, and whose outputs are summed (residual adds: natural tie groups).

Data flow is followed through any op that is not a quantisable layer (BatchNorm, activations, pooling,
reshapes); a residual add whose inputs come from two quantisable layers gives an ``adds_with`` edge.
An identity skip (no layer on the shortcut) gives none.
"""

from __future__ import annotations

import operator
from typing import Sequence

import networkx as nx
import torch
from torch import fx, nn

from cetopt.problem.model import Edge, EdgeKind

_ADD_OPS = {operator.add, operator.iadd, torch.add}


def _producers(node: fx.Node, layers: set[str], memo: dict[fx.Node, frozenset[str]]) -> frozenset[str]:
    """The quantisable layers whose outputs reach ``node`` without passing another quantisable layer."""
    if node in memo:
        return memo[node]
    if node.op == "call_module" and node.target in layers:
        result = frozenset({str(node.target)})
    else:
        found: set[str] = set()
        for arg in node.all_input_nodes:
            found |= _producers(arg, layers, memo)
        result = frozenset(found)
    memo[node] = result
    return result


class GraphTraceError(RuntimeError):
    """torch.fx traced the model, but the graph does not show the layers (so its edges would be empty or
    partial); callers fall back to the sequential order and record why."""


def traced_graph(model: nn.Module, layers: Sequence[str]) -> fx.Graph:
    """The fx graph of ``model`` with each named layer as one call_module node.

    Raises:
        GraphTraceError: some layers never appear as modules in the graph (called through their weights,
            e.g. ``F.linear(x, self.fc.weight)``), or the graph connects none of several layers.
        Exception: torch.fx's own error when the model cannot be traced (data-dependent control flow).
    """
    from cetopt.curvature.leaves import LeafTracer

    wanted = set(layers)
    # every named layer and every Linear/Conv/Embedding subclass a leaf: a subclass defined outside torch.nn
    # (e.g. EfficientNet's Conv2dStaticSamePadding) would otherwise be traced through and appear as anonymous
    # F.conv2d calls, or fail to trace (padding computed from the input's shape)
    graph = LeafTracer(wanted).trace(model)
    seen = {str(n.target) for n in graph.nodes if n.op == "call_module"}
    missing = sorted(wanted - seen)
    if missing:
        raise GraphTraceError(f"torch.fx traced the model, but {len(missing)} of {len(wanted)} layers never appear "
                              f"as module calls (e.g. {missing[:3]}): their weights are used directly")
    return graph


def traced_edges(model: nn.Module, layers: Sequence[str]) -> tuple[Edge, ...]:
    """Edges between the named quantisable layers of ``model`` (feeds / shares_input / adds_with).

    Raises torch.fx's error when the model cannot be traced symbolically (data-dependent control flow), and
    GraphTraceError when the trace does not show the layers or links none of them; callers fall back to
    the sequential order and say so (never "traced" with no edges).
    """
    graph = traced_graph(model, layers)
    wanted = set(layers)
    memo: dict[fx.Node, frozenset[str]] = {}
    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()

    def add(src: str, dst: str, kind: EdgeKind) -> None:
        key = (src, dst, kind.value)
        if src != dst and key not in seen and (dst, src, kind.value) not in seen:
            seen.add(key)
            edges.append(Edge(src, dst, kind))

    readers: dict[frozenset[str], list[str]] = {}
    adds = []
    for node in graph.nodes:
        if node.op == "call_module" and node.target in wanted:
            sources = frozenset().union(*(_producers(a, wanted, memo) for a in node.all_input_nodes))
            for src in sorted(sources):
                add(src, str(node.target), EdgeKind.FEEDS)
            key = frozenset(a.name for a in node.all_input_nodes)
            readers.setdefault(key, []).append(str(node.target))
        if node.op == "call_function" and node.target in _ADD_OPS:
            adds.append([_producers(a, wanted, memo) for a in node.all_input_nodes])
    feeds = nx.DiGraph((e.src, e.dst) for e in edges)
    feeds.add_nodes_from(wanted)
    for branches in adds:
        if len(branches) != 2:
            continue
        # two layers are summed as peers only if neither lies upstream of the other: an identity skip
        # carries an earlier layer's output, which is an ancestor of the other branch's layer
        left, right = branches
        for a in sorted(left):
            for b in sorted(right):
                if a != b and a not in nx.ancestors(feeds, b) and b not in nx.ancestors(feeds, a):
                    add(a, b, EdgeKind.ADDS_WITH)
    for group in readers.values():
        for a, b in zip(group, group[1:]):
            add(a, b, EdgeKind.SHARES_INPUT)
    if not edges and len(wanted) > 1:
        raise GraphTraceError(f"torch.fx traced the model, but no data flow links any of its {len(wanted)} layers")
    return tuple(edges)

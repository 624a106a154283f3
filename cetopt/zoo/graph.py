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


def traced_edges(model: nn.Module, layers: Sequence[str]) -> tuple[Edge, ...]:
    """Edges between the named quantisable layers of ``model`` (feeds / shares_input / adds_with).

    Raises torch.fx's error when the model cannot be traced symbolically (data-dependent control flow);
    callers fall back to the sequential order and say so.
    """
    graph = fx.symbolic_trace(model).graph
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
    return tuple(edges)

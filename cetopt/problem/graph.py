"""The layer graph: which layer feeds which, which share an input, whose outputs are added.

Built with networkx from ``problem.edges``; used to derive tie groups (residual adds) and the layer pairs
that get interaction terms, and drawable for notebooks.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from cetopt.problem.model import AllocationProblem, EdgeKind


def layer_graph(problem: AllocationProblem) -> nx.MultiDiGraph:
    """A MultiDiGraph with one node per layer (attributes: params, order) and one edge per problem edge
    (attribute ``kind``: feeds, shares_input or adds_with)."""
    graph = nx.MultiDiGraph(name=problem.name)
    for order, layer in enumerate(problem.layers):
        graph.add_node(layer.name, params=layer.params, order=order)
    for edge in problem.edges:
        graph.add_edge(edge.src, edge.dst, kind=edge.kind.value)
    return graph


def _edges_of_kind(graph: nx.MultiDiGraph, kind: EdgeKind) -> list[tuple[str, str]]:
    return [(u, v) for u, v, data in graph.edges(data=True) if data.get("kind") == kind.value]


def tie_groups(graph: nx.MultiDiGraph) -> list[tuple[str, ...]]:
    """Groups of layers whose outputs are summed (connected by ``adds_with``), in layer order."""
    undirected = nx.Graph()
    undirected.add_edges_from(_edges_of_kind(graph, EdgeKind.ADDS_WITH))
    order = nx.get_node_attributes(graph, "order")
    groups = [tuple(sorted(c, key=lambda n: order.get(n, 0))) for c in nx.connected_components(undirected)]
    return sorted((g for g in groups if len(g) > 1), key=lambda g: order.get(g[0], 0))


def adjacent_pairs(graph: nx.MultiDiGraph, *, include_shared_inputs: bool = True) -> list[tuple[str, str]]:
    """Layer pairs that interact: producer/consumer (``feeds``) and, optionally, siblings sharing an input."""
    kinds = {EdgeKind.FEEDS.value} | ({EdgeKind.SHARES_INPUT.value} if include_shared_inputs else set())
    seen: set[tuple[str, str]] = set()
    out = []
    for u, v, data in graph.edges(data=True):
        if data.get("kind") in kinds and (u, v) not in seen and (v, u) not in seen:
            seen.add((u, v))
            out.append((u, v))
    return out


def draw_layer_graph(problem: AllocationProblem, ax: Any = None, *, bits: dict[str, int] | None = None) -> Any:
    """Draw the layer graph with matplotlib (layers left to right in depth order; colour = bits if given).

    Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    graph = layer_graph(problem)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, len(problem.layers) * 0.5), 3))
    order = nx.get_node_attributes(graph, "order")
    pos = {name: (i, (i % 3) * 0.3) for name, i in order.items()}
    colours = [bits.get(n, 0) if bits else 0 for n in graph.nodes]
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, cmap="viridis", node_size=200)
    styles = {"feeds": "solid", "shares_input": "dotted", "adds_with": "dashed"}
    for kind, style in styles.items():
        edges = [(u, v) for u, v, d in graph.edges(data=True) if d.get("kind") == kind]
        nx.draw_networkx_edges(graph, pos, edgelist=edges, ax=ax, style=style, arrows=True)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=6)
    ax.set_axis_off()
    return ax

"""The layer graph: which layer feeds which, which share an input, whose outputs are added.

Built with networkx from ``problem.edges``; used to derive tie groups (residual adds) and the layer pairs
that get interaction terms.
"""

from __future__ import annotations

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

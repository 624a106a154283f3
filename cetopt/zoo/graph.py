"""Where builders/assemble.py (owned by the Recipe refactor) still looks for the torch.fx layer-graph tracer, which
lives in :mod:`cetopt.curvature.graph` beside the other model tracing; remove this module once it imports from there."""

from cetopt.curvature.graph import GraphTraceError, traced_edges

__all__ = ["GraphTraceError", "traced_edges"]

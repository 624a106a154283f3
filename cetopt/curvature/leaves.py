"""The modules prefix caching keeps whole, and numerical checks of what a leaf's output is linear in.

Users write layers in many ways: ``nn.Conv2d`` subclasses that pad in their own forward (static or dynamic
"same" padding, weight standardisation), ``nn.Linear`` subclasses with LoRA adapters, wrappers holding a base
Linear. torch.fx's default tracer traces into any module defined outside torch.nn, so such a layer becomes
anonymous ``F.conv2d`` calls (or a TraceError, for padding computed from the input's shape) and no prefix can
start at it. :class:`LeafTracer` keeps every named layer and every Linear/Conv/Embedding subclass as one
``call_module`` node; the prefix runner replays that node with a swapped weight through
``torch.func.functional_call`` on the module itself, so whatever its forward does stays exact.

Whether the layer's output may stand in for its weight (the output-tangent shortcut: dz = z(e) - z(0), the
bias and any adapter cancelling) is not assumed from the class: :func:`affine_problem` checks on the recorded
input that the output is affine in the weight. A weight-standardised convolution is not (its output is
invariant to the weight's scale), and takes the exact per-layer path instead.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import fx, nn

LEAF_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
AFFINE_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


class LeafTracer(fx.Tracer):
    """An fx tracer whose leaves are torch.nn's modules (as by default), every module named in ``layers`` and
    every instance of :data:`LEAF_TYPES`, subclasses defined anywhere included."""

    def __init__(self, layers: Sequence[str] = ()) -> None:
        super().__init__()
        self.layers = frozenset(layers)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.layers or isinstance(m, LEAF_TYPES)
                or super().is_leaf_module(m, module_qualified_name))


def trace_with_leaves(model: nn.Module, layers: Sequence[str] = ()) -> fx.GraphModule:
    """``model`` traced by :class:`LeafTracer` (the GraphModule shares the model's modules and parameters).

    Raises whatever torch.fx raises on code it cannot trace (data-dependent control flow)."""
    tracer = LeafTracer(layers)
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def affine_problem(fn: Callable[[torch.Tensor], Any], like: torch.Tensor, *, what: str = "its input",
                   seed: int = 0) -> str | None:
    """None when ``fn`` is affine in its argument (a tensor shaped like ``like``, named ``what`` in the answer),
    else why not.

    Checked on two random directions a, b scaled like ``like``: fn(a + 2b) - fn(0) must equal
    (fn(a) - fn(0)) + 2 (fn(b) - fn(0)) to :data:`AFFINE_RTOL` of the values' size. ``fn`` must return one
    floating-point tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    scale = float(like.detach().double().std()) if like.numel() > 1 else 1.0
    scale = scale if scale > 0 and scale == scale else 1.0
    dtype = like.dtype if like.is_floating_point() else torch.float64
    a, b = (torch.randn(like.shape, generator=generator, dtype=dtype).to(like.device) * scale for _ in range(2))
    with torch.no_grad():
        outs = [fn(v) for v in (torch.zeros_like(like), a, b, a + 2 * b)]
    if not all(isinstance(o, torch.Tensor) and torch.is_floating_point(o) for o in outs):
        return "its output is not one floating-point tensor"
    zero, fa, fb, fab = (o.double() for o in outs)
    gap = float((fab - zero - (fa - zero) - 2 * (fb - zero)).norm())
    size = sum(float(o.norm()) for o in (zero, fa, fb, fab))
    tol = AFFINE_RTOL.get(like.dtype, 1e-4)
    if not gap <= tol * max(size, 1e-300):
        return f"its output is not affine in {what} (a + 2b check off by {gap / max(size, 1e-300):.2g} relative)"
    return None

"""Exact quadratic forms of given error vectors: e_l' H_ll e_l per layer and candidate, and optionally the
cross-layer terms e_a' H_ab e_b. This is the quantity CET needs for a layer's quantisation error at
each candidate bit-width. Each product differentiates only the layers involved (a layer's gradient
w.r.t. its own weight, or w.r.t. its neighbour's for cross terms), a fraction of a full Hessian pass.

The own terms use prefix caching (cetopt.curvature.prefix) where the model traces with torch.fx: each
layer's products run from the layer's cached input on, one layer's graph at a time; where it does not, a layer
called once whose output is affine in its weight takes its products from its hooked output
(cetopt.curvature.hooked); the rest use the operator's full first-order graph. All give the same numbers
(tests/curvature/test_prefix.py, tests/curvature/architectures/). ``QuadraticForms.paths`` says which ran.
Under torch.distributed the batches are shared among ranks and the sums all-reduced (as the operator does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from cetopt import distributed
from cetopt.curvature.coverage import FORWARD, FULL, HOOKED, OUTPUT_BACKWARD, PREFIX, WEIGHT_BACKWARD, LayerPath
from cetopt.curvature.operator import CurvatureOperator, check_finite, eval_mode
from cetopt.curvature.progress import progress
from cetopt.errors import ProblemError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuadraticForms:
    """Quadratic forms of per-layer error vectors.

    Attributes:
        own: layer name -> (K,) array of e_k' H_ll e_k for that layer's K error vectors.
        linear: layer name -> (K,) array of g_l . e_k (the first-order term), if a gradient was given.
        cross: (a, b) -> (K_a, K_b) array of e_a,i' H_ab e_b,j for the requested pairs.
        paths: layer name -> how its own terms were computed (cetopt.curvature.coverage.LayerPath).
    """

    own: dict[str, np.ndarray]
    linear: dict[str, np.ndarray] = field(default_factory=dict)
    cross: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    paths: dict[str, LayerPath] = field(default_factory=dict)


def quadratic_forms(operator: CurvatureOperator, errors: dict[str, Sequence[torch.Tensor]], *,
                    pairs: Sequence[tuple[str, str]] = (), gradient: Sequence[torch.Tensor] | None = None,
                    prefix_cache: bool = True, forward_mode: bool = True, show_progress: bool = True) -> QuadraticForms:
    """e' H e for each layer's error vectors (and e_a' H_ab e_b for ``pairs``).

    Args:
        operator: the curvature operator.
        errors: layer name -> list of error tensors shaped like the weight (e.g. Q_b(W) - W per bit-width).
        pairs: layer pairs whose cross terms to compute (e.g. producer/consumer from the layer graph).
        gradient: per-layer gradients, to also return g . e.
        prefix_cache: compute the own terms from each layer's cached input on (where the model traces).
        forward_mode: with prefix caching, compute a Linear/Conv layer's own terms by one jvp per error where the
            model is piecewise linear from the layer's output on (exact there; cetopt.curvature.prefix).
        show_progress: a bar per layer (stderr, after a few seconds).
    """
    counts = {n: len(v) for n, v in errors.items()}
    index = {n: i for i, n in enumerate(operator.names)}
    stacked = _stacked_errors(operator, errors)
    paths: dict[str, LayerPath] = {}
    runner = None
    if prefix_cache:
        from cetopt.curvature.prefix import make_prefix_runner

        runner, reason = make_prefix_runner(operator.model, operator.loss_fn, operator.names)
        own, paths = _prefix_forms(operator, runner, reason, stacked, show_progress, forward_mode)
    else:
        own = {}
    rest = [name for name in stacked if name not in own]
    for name in rest:
        reason = paths[name].fallback if name in paths else "prefix caching not asked for"
        paths[name] = LayerPath(name, FULL, WEIGHT_BACKWARD, reason)
    if prefix_cache and rest and not distributed.is_distributed():  # ranks could disagree on a refusal
        _hooked(operator, stacked, rest, own, paths)
        rest = [name for name in rest if name not in own]
    if runner is not None and rest:  # layers never called as modules (out_proj): replay the module that uses them
        _inside_callers(operator, runner, {n: stacked[n] for n in rest if runner.supports(n)}, own, paths,
                        show_progress, forward_mode)
        rest = [name for name in rest if name not in own]
    _log_fallbacks(paths)
    for name in progress(total=len(rest), desc="quadratic forms", disable=not show_progress, iterable=rest):
        block = stacked[name]
        products = operator.cross_block_hvp(index[name], index[name], block)
        values = (block * products).reshape(block.shape[0], -1).sum(dim=1)
        check_finite(name, "quadratic form", values)
        own[name] = values.double().cpu().numpy()
    own = {name: own[name] for name in stacked}
    cross = {}
    for a, b in progress(total=len(pairs), desc="cross-layer terms", disable=not show_progress, iterable=pairs):
        # d(g_b . e_b)/dW_a = H_ab e_b (as a W_a-shaped tensor); dot with e_a gives e_a' H_ab e_b
        products = operator.cross_block_hvp(index[b], index[a], stacked[b])  # (K_b, *shape_a)
        flat_a = stacked[a].reshape(counts[a], -1)
        cross[(a, b)] = (flat_a @ products.reshape(counts[b], -1).T).double().cpu().numpy()
    linear = {}
    if gradient is not None:
        for name in errors:
            g = gradient[index[name]]
            linear[name] = np.array([float((g * e.to(g)).sum()) for e in errors[name]])
    return QuadraticForms(own=own, linear=linear, cross=cross, paths={n: paths[n] for n in stacked})


def _stacked_errors(operator: CurvatureOperator, errors: dict[str, Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Layer -> its error vectors stacked (K, *weight shape) on the weight's device and dtype; an unknown layer or
    a vector of another shape is a ProblemError (field "errors")."""
    names = operator.names
    unknown = [n for n in errors if n not in names]
    if unknown:
        raise ProblemError(f"no such quantisable layer(s) {unknown[:3]}; known: {names[:5]}...", field="errors")
    stacked: dict[str, torch.Tensor] = {}
    for name, vectors in errors.items():
        target = operator.params[names.index(name)]
        for i, tensor in enumerate(vectors):
            if tuple(tensor.shape) != tuple(target.shape):
                raise ProblemError(f"error vector {i} of {name!r} has shape {tuple(tensor.shape)}, the weight "
                                   f"{tuple(target.shape)}", field="errors")
        stacked[name] = torch.stack([t.to(device=target.device, dtype=target.dtype) for t in vectors])
    return stacked


def _inside_callers(operator: CurvatureOperator, runner: Any, inside: dict[str, torch.Tensor],
                    own: dict[str, np.ndarray], paths: dict[str, LayerPath], show_progress: bool,
                    forward_mode: bool) -> None:
    """The own forms of layers never called as modules, replayed inside the module that uses them; adds them to
    ``own`` and records their path."""
    served, inside_paths = _prefix_forms(operator, runner, None, inside, show_progress, forward_mode,
                                         inside_callers=True)
    for name in served:
        own[name] = served[name]
        path, caller = inside_paths[name], runner.site(name)[0]
        why = f"{paths[name].fallback}; replayed inside {caller}" + (f": {path.fallback}" if path.fallback else "")
        paths[name] = LayerPath(name, PREFIX, path.forms, why)


def _prefix_forms(operator: CurvatureOperator, runner: Any, reason: str | None, stacked: dict[str, torch.Tensor],
                  show_progress: bool, forward_mode: bool = True, inside_callers: bool = False
                  ) -> tuple[dict[str, np.ndarray], dict[str, LayerPath]]:
    """e' H_ll e for the layers prefix caching supports (layer -> (K,) float64; {} when it is off) and the path
    each layer took (for the others: why the full graph, as a :data:`FULL` path). ``runner``: the
    PrefixRunner (None: the model does not trace, for ``reason``); the layers called as modules in the traced
    graph, or with ``inside_callers`` those that are not but whose enclosing module is (replayed with the
    weight swapped inside it)."""
    names = [n for n in stacked if runner is not None and runner.supports(n) and runner.own_call(n) != inside_callers]
    paths = {n: LayerPath(n, FULL, WEIGHT_BACKWARD, reason or f"module {n} is not called in the traced graph")
             for n in stacked if n not in names}
    if runner is None or not names:
        return {}, paths
    runner.stationary = operator.stationary  # forward-mode forms are the exact Hessian for any suffix there
    index = {n: i for i, n in enumerate(operator.names)}
    sums = {n: torch.zeros(stacked[n].shape[0], dtype=torch.float64, device=operator.device) for n in names}
    batched = operator.device.type == "cuda"  # vmapped backward measured slower than a loop on the CPU
    bar = progress(total=len(names) * len(operator.local_batches), desc="quadratic forms (prefix cached)",
                   disable=not show_progress)
    try:
        with eval_mode(operator.model):
            for batch in operator.local_batches:
                if not runner.record(operator.model, batch):
                    return {}, {n: LayerPath(n, FULL, WEIGHT_BACKWARD, runner.failure) for n in stacked}
                for name in names:
                    bar.set_postfix_str(name, refresh=False)
                    values, paths[name] = _layer_forms(runner, name, operator.params[index[name]], stacked[name],
                                                       batched, forward_mode)
                    sums[name] += values
                    bar.update(1)
                runner.release()
    finally:
        bar.close()
    reduced = distributed.all_reduce_sum([sums[n] for n in names])
    out = {}
    for name, total in zip(names, reduced):
        values = total / len(operator.batches)
        check_finite(name, "quadratic form", values)
        out[name] = values.cpu().numpy()
        operator.hvp_count += stacked[name].shape[0]
    return out, paths


def _hooked(operator: CurvatureOperator, stacked: dict[str, torch.Tensor], names: list[str],
            own: dict[str, np.ndarray], paths: dict[str, LayerPath]) -> None:
    """Forms of the layers prefix caching could not serve, from each one's hooked output where it allows
    (cetopt.curvature.hooked); fills ``own`` and ``paths`` in place, adding each refusal's reason."""
    from cetopt.curvature.hooked import hooked_forms

    served, refused = hooked_forms(operator, {n: stacked[n] for n in names})
    for name in names:
        if name in refused:
            paths[name] = LayerPath(name, FULL, WEIGHT_BACKWARD, f"{paths[name].fallback}; hooks: {refused[name]}")
            continue
        check_finite(name, "quadratic form", served[name])
        own[name] = served[name].cpu().numpy()
        operator.hvp_count += stacked[name].shape[0]
        paths[name] = LayerPath(name, HOOKED, OUTPUT_BACKWARD, paths[name].fallback)


def _log_fallbacks(paths: dict[str, LayerPath]) -> None:
    """An INFO line per distinct (graph, reason) of the layers off prefix caching."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for name, path in paths.items():
        if path.graph != PREFIX:
            groups.setdefault((path.graph, path.fallback), []).append(name)
    for (graph, reason), names in groups.items():
        log.info("quadratic forms of %d layer(s) (%s) on the %s: %s", len(names), ", ".join(names[:5])
                 + (" ..." if len(names) > 5 else ""), graph, reason)


def _layer_forms(runner: Any, name: str, weight: torch.Tensor, block: torch.Tensor, batched: bool,
                 forward_mode: bool = True) -> tuple[torch.Tensor, LayerPath]:
    """(K,) float64: e_k' H_ll e_k of one recorded batch, from the layer's suffix graph (from its output on
    where the output is affine in the weight: dz' H_z dz with dz the output change of e_k; by forward mode
    where the suffix is also piecewise linear and ``forward_mode``), and the path taken."""
    forward_reason = runner.forward_problem(name) if forward_mode else "forward mode not asked for"
    if forward_reason is None:
        values = runner.forward_forms(name, block)
        if values is not None:
            return values, LayerPath(name, PREFIX, FORWARD)
    at_output = runner.output_first_order(name)
    if at_output is not None:
        g, z, tangent = at_output
        values = []
        for e in block:
            dz = tangent(e)
            (hz,) = torch.autograd.grad(g, z, grad_outputs=dz, retain_graph=True, allow_unused=True) \
                if g.requires_grad else (None,)
            values.append(torch.zeros((), dtype=torch.float64) if hz is None else (dz * hz).sum().double())
        return torch.stack(values).to(block.device), LayerPath(name, PREFIX, OUTPUT_BACKWARD, forward_reason)
    path = LayerPath(name, PREFIX, WEIGHT_BACKWARD, runner.shortcut_problem(name))
    g, w = runner.first_order(name, weight)
    if not g.requires_grad:  # the loss does not depend on this layer beyond first order
        return torch.zeros(block.shape[0], dtype=torch.float64, device=block.device), path
    if batched and block.shape[0] > 1:
        (products,) = torch.autograd.grad(g, w, grad_outputs=block, is_grads_batched=True)
    else:
        parts = [torch.autograd.grad(g, w, grad_outputs=e, retain_graph=True, allow_unused=True)[0] for e in block]
        products = torch.stack([torch.zeros_like(e) if p is None else p for p, e in zip(parts, block)])
    return (block * products).reshape(block.shape[0], -1).sum(dim=1).detach().double(), path

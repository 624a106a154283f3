"""Sequential rounding (GPTQ's order): the planned layers are rounded one after another in the order the model runs
them, and each layer's input Gram matrix G = X'X / N is computed from the inputs that the model with every layer
rounded so far produces (layers that run later are still FP32).

What it minimises, said plainly: each layer's own reconstruction error sum_r d_r' G_q d_r with G_q the Gram matrix
of its quantised-upstream inputs X_q, i.e. || (W_hat - W) X_q ||^2, GPTQ's target (Frantar et al. 2022: H from the
inputs of the partly quantised model, the layer's FP32 weights as the target on those inputs). It does not fit
the FP32 model's outputs from quantised inputs (|| W_hat X_q - W X ||^2, which also corrects upstream error).

Cost and memory: one forward pass over the calibration batches per layer that needs a Gram matrix, each pass
stopped right after that layer has run when the layer runs once per forward pass; one working copy of the model
and one Gram matrix at a time (:func:`sequential_round`). Layers whose rounding needs no Gram matrix (nearest,
mse, major-axis) are rounded in the same order, so their quantised outputs feed the layers below them.

Sequential codes differ from the candidates a problem priced (those were rounded on the FP32 model's inputs):
a plan applied sequentially is priced for the independent rounding, which :func:`sequential_grams` logs.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError

log = logging.getLogger(__name__)

SEQUENTIAL_KEY = "sequential_rounding"  # plan.extra flag: apply (and verify) with sequential Gram matrices


class _Reached(Exception):
    """Raised by a forward hook once the layer being observed has run: the rest of the pass is not needed."""


def _owner(model: nn.Module, name: str) -> str:
    """The module whose forward call consumes layer ``name``'s weight: the module itself, or for a bare Parameter
    (nn.MultiheadAttention's projections) the module holding it."""
    from cetopt.curvature.layers import layer_weight

    layer_weight(model, name)  # ProblemError when the model has no such layer
    modules = dict(model.named_modules())
    return name if name in modules else name.rpartition(".")[0]


def execution_order(model: nn.Module, names: Sequence[str], run: Callable[[nn.Module, Any], Any],
                    batch: Any) -> tuple[list[str], dict[str, int]]:
    """(``names`` in the order their modules first run on ``batch``, layer -> calls per forward pass), from forward
    pre-hooks (cetopt._hooks.observe_inputs). Layers sharing a module keep the order of ``names``.

    Raises:
        ProblemError: a layer never runs on the batch.
    """
    from cetopt._hooks import observe_inputs
    from cetopt.curvature.operator import eval_mode

    owners = {n: _owner(model, n) for n in names}
    seen: list[str] = []
    calls: dict[str, int] = {}

    def record(owner: str) -> None:
        calls[owner] = calls.get(owner, 0) + 1
        if owner not in seen:
            seen.append(owner)

    with eval_mode(model):
        observe_inputs(model, {o: (lambda m, a, o=o: record(o)) for o in set(owners.values())}, [batch], run)
    never = [n for n in names if owners[n] not in calls]
    if never:
        raise ProblemError(f"layer {never[0]!r} never ran on the calibration batch, so it has no inputs to round "
                           "on", field="layers")
    rank = {o: i for i, o in enumerate(seen)}
    order = sorted(names, key=lambda n: rank[owners[n]])  # stable: names sharing a module keep their order
    return order, {n: calls[owners[n]] for n in names}


def _gram_after_upstream(model: nn.Module, name: str, run: Callable[[nn.Module, Any], Any],
                         batches: Sequence[Any], stop: bool) -> torch.Tensor:
    """Layer ``name``'s input Gram matrix on ``model`` as it is now (cetopt.quant.adaround.layer_grams), each
    forward pass stopped after the layer's module has run when ``stop``."""
    from cetopt.quant.adaround import layer_grams

    if not stop:
        return layer_grams(model, [name], run, batches)[name]
    module = model.get_submodule(_owner(model, name))

    def halt(_module: nn.Module, _args: Any, _out: Any) -> None:
        raise _Reached

    def run_until(m: nn.Module, batch: Any) -> None:
        try:
            run(m, batch)
        except _Reached:
            pass

    handle = module.register_forward_hook(halt)
    try:
        return layer_grams(model, [name], run_until, batches)[name]
    finally:
        handle.remove()


def sequential_round(model: nn.Module, names: Sequence[str], run: Callable[[nn.Module, Any], Any],
                     batches: Sequence[Any], round_layer: Callable[[str, torch.Tensor, torch.Tensor | None],
                                                                   torch.Tensor],
                     needs_gram: Callable[[str], bool],
                     on_gram: Callable[[str, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """Round the layers ``names`` of ``model`` in the order the model runs them, each on the Gram matrix of the
    inputs that the model with the layers before it already rounded produces.

    Args:
        run: ``run(model, batch)`` does a forward pass (a spec's loss_fn).
        batches: the calibration batches every Gram matrix is summed over.
        round_layer: ``round_layer(name, weight, gram)`` -> the layer's rounded weight (torch layout; ``weight``
            the FP32 weight; ``gram`` (groups, p, p) float64 or None when ``needs_gram(name)`` is False).
        on_gram: called with each Gram matrix as it is computed (only one is held here at a time).

    Returns:
        layer -> rounded weight, as ``round_layer`` returned it. ``model`` is left unchanged (a copy is rounded).
    """
    from cetopt.curvature.layers import layer_weight

    if not batches:
        raise ProblemError("sequential rounding needs calibration batches", field="calibration")
    work = copy.deepcopy(model)
    order, calls = execution_order(work, names, run, batches[0])
    out: dict[str, torch.Tensor] = {}
    for name in order:
        gram = _gram_after_upstream(work, name, run, batches, stop=calls[name] == 1) if needs_gram(name) else None
        if gram is not None and on_gram is not None:
            on_gram(name, gram)
        target = layer_weight(work, name)
        rounded = round_layer(name, target.detach().clone(), gram)
        target.data.copy_(rounded.to(device=target.device, dtype=target.dtype))
        out[name] = rounded
        del gram
    return out


def sequential_grams(model: nn.Module, plan: Any, run: Callable[[nn.Module, Any], Any], batches: Sequence[Any], *,
                     quadrics: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The Gram matrices with which :func:`cetopt.quant.plan.apply_plan` rounds ``plan`` (a cetopt.quant.plan.Plan)
    sequentially: every planned layer compressed in execution order exactly as apply_plan compresses it
    (cetopt.quant.pack.compress_layer), the Gram matrix of each layer whose rounding needs one taken after its
    upstream layers are compressed. Layer -> (groups, p, p) float64 for those layers only."""
    from cetopt.quant.pack import compress_layer
    from cetopt.quant.rounding import rounding_needs
    from cetopt.quant.rounding.base import GRAM, RoundingContext

    grams: dict[str, torch.Tensor] = {}

    def needs(name: str) -> bool:
        return GRAM in rounding_needs(plan.layers[name].rounding)

    def round_layer(name: str, weight: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=gram)
        return compress_layer(weight, plan.layers[name], plan.quantizer_of(name), context=context, name=name).weight

    sequential_round(model, list(plan.layers), run, batches, round_layer, needs, on_gram=grams.__setitem__)
    if grams:
        log.info("sequential rounding: %d layers rounded on the inputs of the quantised upstream model; their codes "
                 "differ from the candidates the plan was priced with (FP32 inputs)", len(grams))
    return grams

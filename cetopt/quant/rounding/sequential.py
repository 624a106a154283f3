"""Sequential rounding (GPTQ's order): the planned layers are rounded one after another in the order the model runs
them, and each layer's input Gram matrix G = X'X / N is computed from the inputs that the model with every layer
rounded so far produces (layers that run later are still FP32).

What it minimises, said plainly: each layer's own reconstruction error sum_r d_r' G_q d_r with G_q the Gram matrix
of its quantised-upstream inputs X_q, i.e. || (W_hat - W) X_q ||^2, GPTQ's target (Frantar et al. 2022: H from the
inputs of the partly quantised model, the layer's FP32 weights as the target on those inputs): what `cetopt apply
--sequential-rounding` ships. The library and benchmark option ``target="fp32"`` fits the FP32 model's outputs
from the quantised inputs instead, || W_hat X_q - W X ||^2, which also corrects upstream error: the same rounding
applied to the least-squares weights W* of that fit (:func:`fp32_target`).

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
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

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


def _layer_input(model: nn.Module, name: str, run: Callable[[nn.Module, Any], Any], batch: Any) -> torch.Tensor:
    """Module ``name``'s input on ``batch``, the forward pass stopped before the module runs."""
    from cetopt._hooks import observe_inputs
    from cetopt.curvature.operator import eval_mode

    seen: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0].detach())
        raise _Reached

    def run_until(m: nn.Module, b: Any) -> None:
        try:
            run(m, b)
        except _Reached:
            pass

    with eval_mode(model):
        observe_inputs(model, {name: grab}, [batch], run_until)
    return seen[0]


def _row_pairs(module: nn.Module, x: torch.Tensor, xq: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The inputs ``x`` and ``xq`` of ``module`` as (groups, rows, p) float64 rows, chunk by chunk of images for a
    convolution (unfolded patches; memory bounded as cetopt.quant.adaround's Gram matrices)."""
    from cetopt.quant.adaround import GRAM_CHUNK_VALUES, _patches

    if isinstance(module, nn.Linear):
        yield x.double().reshape(1, -1, x.shape[-1]), xq.double().reshape(1, -1, xq.shape[-1])
        return
    per_image = max(1, x[0].numel() * math.prod(module.kernel_size))
    chunk = max(1, GRAM_CHUNK_VALUES // per_image)
    for start in range(0, x.shape[0], chunk):
        yield _patches(module, x[start:start + chunk].double()), _patches(module, xq[start:start + chunk].double())


def fp32_target(reference: nn.Module, work: nn.Module, name: str, run: Callable[[nn.Module, Any], Any],
                batches: Sequence[Any], damping: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(W*, G_q) for fitting the FP32 model's outputs of layer ``name`` from the inputs of the partly quantised
    ``work``: min over W_hat of sum_n ||W x_n - W_hat x_q,n||^2 = const + sum_r (W*_r - W_hat_r)' G_q (W*_r - W_hat_r)
    with G_q = X_q'X_q / N and W* = W + W (C - G_q)(G_q + lambda I)^-1, C = X'X_q / N (X: the FP32 model's inputs of
    the layer; lambda = ``damping`` x mean diag(G_q), as GPTQ's; W* = W exactly when nothing upstream changed).
    W* in the weight's torch layout and dtype; G_q (groups, p, p) float64. Linear and Conv1d/Conv2d layers run once
    per forward pass only."""
    from cetopt.curvature.layers import layer_weight

    module = work.get_submodule(name) if name in dict(work.named_modules()) else None
    if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        raise ProblemError(f"layer {name!r}: fitting the FP32 outputs needs a Linear or Conv1d/Conv2d layer; use "
                           "target='layer'", field="target")
    gram = cross = None
    count = 0
    for batch in batches:
        for x, xq in _row_pairs(module, _layer_input(reference, name, run, batch), _layer_input(work, name, run, batch)):
            g, c = torch.einsum("gnp,gnq->gpq", xq, xq), torch.einsum("gnp,gnq->gpq", x, xq)
            gram, cross = (g, c) if gram is None else (gram + g, cross + c)
            count += xq.shape[1]
    gram, cross = gram / count, cross / count  # type: ignore[operator]
    weight = layer_weight(work, name).detach()
    groups, p = gram.shape[0], gram.shape[1]
    rows = weight.double().reshape(groups, -1, p)
    mean = torch.diagonal(gram, dim1=1, dim2=2).mean(dim=1).clamp_min(1e-30)
    damped = gram + (damping * mean)[:, None, None] * torch.eye(p, dtype=gram.dtype)
    # W (C - G) (G + lambda I)^-1, solved rather than inverted: (G + lambda I) is symmetric
    shift = torch.linalg.solve(damped, (rows @ (cross - gram)).transpose(1, 2)).transpose(1, 2)
    return (rows + shift).reshape(weight.shape).to(weight.dtype), gram


TARGETS = ("layer", "fp32")


def sequential_round(model: nn.Module, names: Sequence[str], run: Callable[[nn.Module, Any], Any],
                     batches: Sequence[Any], round_layer: Callable[[str, torch.Tensor, torch.Tensor | None],
                                                                   torch.Tensor],
                     needs_gram: Callable[[str], bool],
                     on_gram: Callable[[str, torch.Tensor], None] | None = None,
                     target: str = "layer") -> dict[str, torch.Tensor]:
    """Round the layers ``names`` of ``model`` in the order the model runs them, each on the Gram matrix of the
    inputs that the model with the layers before it already rounded produces.

    Args:
        run: ``run(model, batch)`` does a forward pass (a spec's loss_fn).
        batches: the calibration batches every Gram matrix is summed over.
        round_layer: ``round_layer(name, weight, gram)`` -> the layer's rounded weight (torch layout; ``weight``
            the weight to round; ``gram`` (groups, p, p) float64 or None when ``needs_gram(name)`` is False).
        on_gram: called with each Gram matrix as it is computed (only one is held here at a time).
        target: "layer" (GPTQ's: ``weight`` is the layer's FP32 weight, its outputs on the quantised inputs the
            target) or "fp32" (the FP32 model's outputs of the layer are the target: ``weight`` is
            :func:`fp32_target`'s W*, for the Gram-matrix layers; two partial forward passes per batch).

    Returns:
        layer -> rounded weight, as ``round_layer`` returned it. ``model`` is left unchanged (a copy is rounded).
    """
    from cetopt.curvature.layers import layer_weight

    if not batches:
        raise ProblemError("sequential rounding needs calibration batches", field="calibration")
    if target not in TARGETS:
        raise ProblemError(f"unknown target {target!r}; use one of {TARGETS}", field="target")
    work = copy.deepcopy(model)
    order, calls = execution_order(work, names, run, batches[0])
    out: dict[str, torch.Tensor] = {}
    for name in order:
        weight = layer_weight(work, name).detach().clone()
        if needs_gram(name) and target == "fp32":
            if calls[name] != 1:
                raise ProblemError(f"layer {name!r} runs {calls[name]} times per forward pass: fitting the FP32 "
                                   "outputs needs one call; use target='layer'", field="target")
            weight, gram = fp32_target(model, work, name, run, batches)
        else:
            gram = _gram_after_upstream(work, name, run, batches, stop=calls[name] == 1) if needs_gram(name) else None
        if gram is not None and on_gram is not None:
            on_gram(name, gram)
        target_weight = layer_weight(work, name)
        rounded = round_layer(name, weight, gram)
        target_weight.data.copy_(rounded.to(device=target_weight.device, dtype=target_weight.dtype))
        out[name] = rounded
        del gram
    return out


def sequential_apply(model: nn.Module, plan: Any, run: Callable[[nn.Module, Any], Any], batches: Sequence[Any], *,
                     target: str = "layer", quadrics: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Layer -> compressed weight of every layer of ``plan`` (a cetopt.quant.plan.Plan) rounded sequentially, each
    compressed as apply_plan compresses it (cetopt.quant.pack.compress_layer: exactly what a packed file decodes to);
    one Gram matrix held at a time. ``target``: see :func:`sequential_round` (with "fp32" the codes are those of
    W*, which `cetopt apply` does not reproduce: a library and benchmark option)."""
    from cetopt.quant.pack import compress_layer
    from cetopt.quant.rounding import rounding_needs
    from cetopt.quant.rounding.base import GRAM, RoundingContext

    def round_layer(name: str, weight: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        context = RoundingContext(quadric=(quadrics or {}).get(name), gram=gram)
        return compress_layer(weight, plan.layers[name], plan.quantizer_of(name), context=context, name=name).weight

    return sequential_round(model, list(plan.layers), run, batches, round_layer,
                            lambda n: GRAM in rounding_needs(plan.layers[n].rounding), target=target)


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

"""AdaRound-style rounding: per layer, choose each weight's rounding direction (floor or ceiling of its grid
cell) to minimise the layer's output reconstruction error on calibration inputs X,

    E(d) = mean_n || f(x_n; W + d) - f(x_n; W) ||^2 = sum_rows d_r' G d_r,   G = X'X / N,

AdaRound's objective (Nagel et al. 2020) with the bias cancelling. It is solved here by exact greedy flips
instead of AdaRound's relaxed sigmoid with an annealed regulariser: each step flips, in every output row, the
one weight whose flip lowers E most (Delta_j = 2 delta_j (G d)_j + delta_j^2 G_jj, exact), until no single
flip improves. E therefore never exceeds round-to-nearest's, the result is a local optimum of the flip
neighbourhood, and every weight stays within one grid step of nearest (so it packs exactly like nearest). A
relaxed sigmoid run of a few hundred Adam steps did not beat nearest on a 6-weight layer where brute force
halves the error, so the simple exact search is used. Simplifications, said plainly: X is the FP32 model's
activations (no sequential re-capture after earlier layers are quantised); the grid is the quantiser's own
with clipping ratio 1.

Shapes: Linear inputs (N, in_features); Conv1d (N, C_in, L) and Conv2d (N, C_in, H, W) inputs (unfolded to
patches); weights as in torch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError


GRAM_CHUNK_VALUES = 1 << 24  # unfolded patch values per chunk (128 MiB in float64): bounds a conv's memory


def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(groups, samples x positions, p) unfolded inputs of a Conv1d/Conv2d for images ``x``."""
    if isinstance(module.padding, str):
        raise ProblemError("AdaRound and GPTQ need numeric convolution padding", field="layers")
    if isinstance(module, nn.Conv1d):  # a Conv2d of height 1
        patches = nn.functional.unfold(x.unsqueeze(2), (1, *module.kernel_size), (1, *module.dilation),
                                       (0, *module.padding), (1, *module.stride))
    else:
        patches = nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    n, _, positions = patches.shape
    return patches.reshape(n, module.groups, -1, positions).permute(1, 0, 3, 2).reshape(module.groups, n * positions, -1)


def _gram_sum(module: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(X'X summed over the rows of ``inputs``: (groups, p, p) float64, number of rows)."""
    if isinstance(module, nn.Embedding):
        # a lookup's output error for token t is the row error d_t (dim values): the layer-output error over the
        # lookups is sum_t count_t ||d_t||^2, each row on its own scale, so every row's rounding problem has the
        # Gram matrix count_t I; scaled to I it leaves each row's minimiser unchanged (gptq reduces to nearest)
        count = int(inputs.numel())
        return torch.eye(module.embedding_dim, dtype=torch.float64, device=inputs.device)[None] * count, count
    if isinstance(module, nn.Linear):
        x = inputs.detach().double().reshape(-1, inputs.shape[-1])
        return (x.T @ x)[None], x.shape[0]
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        x = inputs.detach()
        per_image = max(1, x[0].numel() * math.prod(module.kernel_size))  # unfolded values of one image (bound)
        chunk = max(1, GRAM_CHUNK_VALUES // per_image)
        total, count = None, 0
        for start in range(0, x.shape[0], chunk):
            per = _patches(module, x[start:start + chunk].double())
            part = torch.einsum("gnp,gnq->gpq", per, per)
            total = part if total is None else total + part
            count += per.shape[1]
        return total, count  # type: ignore[return-value]
    raise ProblemError(f"AdaRound and GPTQ support Linear, Conv1d, Conv2d and Embedding layers, not "
                       f"{type(module).__name__}",
                       field="layers")


def input_gram(module: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(G: (groups, p, p) = X'X / N per input group, groups) with p the weights per output row."""
    total, count = _gram_sum(module, inputs)
    return total / count, total.shape[0]


def _energy(d: torch.Tensor, gram: torch.Tensor) -> float:
    """sum_rows d_r' G_group(r) d_r for d: (groups, rows per group, p)."""
    return float(torch.einsum("grp,gpq,grq->", d, gram, d))


def gram_flips(d: torch.Tensor, step: torch.Tensor, up: torch.Tensor, gram: torch.Tensor,
               max_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Exact greedy flips of E(d) = sum_rows d_r' G d_r between each weight's two grid neighbours.

    Args:
        d: (groups, rows per group, p) errors of the starting point (nearest).
        step: same shape, ceiling value - floor value (0 where the two coincide at the grid's edge).
        up: same shape, bool: the starting point is the ceiling.
        gram: (groups, p, p).
        max_steps: cap on greedy iterations (default p: every weight may flip once).

    Returns:
        (final d, bool mask of the weights moved to their other neighbour, iterations run).
    """
    scale = max(_energy(d, gram), 1e-300)
    sign = torch.where(up, -1.0, 1.0).double()
    gd = torch.einsum("gpq,grq->grp", gram, d)
    diag = torch.diagonal(gram, dim1=1, dim2=2)[:, None, :]
    steps, limit = 0, max_steps if max_steps is not None else d.shape[2]
    start = sign.clone()
    while steps < limit:
        delta = sign * step
        gain = 2 * delta * gd + delta ** 2 * diag                   # change of E if weight j of row r flips
        best = gain.argmin(dim=2, keepdim=True)
        improving = gain.gather(2, best) < -1e-15 * scale
        if not bool(improving.any()):
            break
        size = delta.gather(2, best) * improving                      # (groups, rows, 1); 0 where no flip
        moved = torch.zeros_like(d).scatter_(2, best, size)
        columns = torch.gather(gram, 1, best.expand(-1, -1, d.shape[2]))  # G row j_r (= column, G symmetric)
        d, gd = d + moved, gd + size * columns                         # O(rows p) per step
        sign = torch.where(moved != 0, -sign, sign)
        steps += 1
    return d, sign != start, steps


def layer_inputs(model: nn.Module, names: Sequence[str], run: Callable[[nn.Module, Any], Any],
                 batches: Sequence[Any], *, max_rows: int = 4096) -> dict[str, torch.Tensor]:
    """Each named layer's input activations over ``batches`` (``run(model, batch)`` does the forward pass), the
    first ``max_rows`` samples (Linear: rows of the flattened input; Conv2d: images)."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ProblemError(f"the model has no layer {missing[0]!r}", field="layers")
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    from cetopt._hooks import observe_inputs

    observe_inputs(model, {n: (lambda m, a, n=n: seen[n].append(a[0].detach())) for n in names}, batches, run)
    out = {}
    for n in names:
        x = torch.cat([t.reshape(-1, t.shape[-1]) if isinstance(modules[n], nn.Linear) else t for t in seen[n]])
        out[n] = x[:max_rows]
    return out


PROJECTED = {"in_proj_weight": "query", "q_proj_weight": "query", "k_proj_weight": "key", "v_proj_weight": "value"}


def _attention_input(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(the nn.MultiheadAttention holding bare-Parameter layer ``name``, the Parameter's attribute): its rows
    project the query (q_proj_weight), key, value, or all three (in_proj_weight, self-attention only)."""
    from cetopt.curvature.layers import BARE_WEIGHTS, layer_weight

    layer_weight(model, name)  # ProblemError when there is no such layer at all
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    if not isinstance(module, nn.MultiheadAttention) or attr not in BARE_WEIGHTS:
        raise ProblemError(f"layer {name!r} is a bare Parameter of a {type(module).__name__}, whose inputs AdaRound "
                           "and GPTQ cannot record; use another rounding (nearest, mse, major-axis)", field="rounding")
    return module, attr


def layer_grams(model: nn.Module, names: Sequence[str], run: Callable[[nn.Module, Any], Any],
                batches: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Each named layer's input Gram matrix G = X'X / N ((groups, p, p) float64; Linear: rows of the flattened
    input; conv: unfolded patches; nn.MultiheadAttention's projection Parameters: rows of the query, key or value
    they project, in_proj_weight in self-attention only; Embedding: the identity) over every batch of ``batches`` (``run(model, batch)`` does the forward
    pass), accumulated batch by batch: only the Gram matrices are kept, not the activations."""
    modules = dict(model.named_modules())
    bare = {n: _attention_input(model, n) for n in names if n not in modules}  # layer -> (owner, which input)
    sums: dict[str, list] = {n: [None, 0] for n in names}

    def record(name: str, module: nn.Module, args: tuple) -> None:
        total, count = _gram_sum(module, args[0])
        acc = sums[name]
        acc[0] = total if acc[0] is None else acc[0] + total
        acc[1] += count

    def record_attention(name: str, which: str, args: tuple, kwargs: dict) -> None:
        query, key, value = (list(args) + [kwargs.get(k) for k in ("query", "key", "value")[len(args):]])[:3]
        inputs = {"query": query, "key": key, "value": value}
        if which == "in_proj_weight" and not (torch.equal(query, key) and torch.equal(query, value)):
            raise ProblemError(f"layer {name!r}: the packed q/k/v projection of a cross-attention takes three inputs, "
                               "so no one Gram matrix describes it; use another rounding (nearest, mse, major-axis)",
                               field="rounding")
        x = inputs[PROJECTED[which]]
        rows = x.detach().double().reshape(-1, x.shape[-1])
        acc = sums[name]
        acc[0] = (rows.T @ rows)[None] if acc[0] is None else acc[0] + (rows.T @ rows)[None]
        acc[1] += rows.shape[0]

    from cetopt._hooks import eval_mode

    hooks = [modules[n].register_forward_pre_hook(lambda m, a, n=n: record(n, m, a)) for n in names if n not in bare]
    hooks += [owner.register_forward_pre_hook(lambda m, a, k, n=n, w=which: record_attention(n, w, a, k),
                                              with_kwargs=True) for n, (owner, which) in bare.items()]
    try:
        with torch.no_grad(), eval_mode(model):
            for b in batches:
                run(model, b)
    finally:
        for hook in hooks:
            hook.remove()
    unseen = [n for n, (total, _) in sums.items() if total is None]
    if unseen:
        raise ProblemError(f"layer {unseen[0]!r} never ran on the calibration batches", field="layers")
    return {n: total / count for n, (total, count) in sums.items()}



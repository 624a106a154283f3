"""Major-axis rounding: choose each weight's rounding direction (floor or ceiling of its grid cell) and the
clipping scale so that the error d points along the flat (major) axes of the layer's quadric.

Round-to-nearest minimises |d|; CET's conclusion is that, at a given bit-width, the loss is smallest when
d lies along the major axes, i.e. when its curvature energy outside them (the complement) is smallest.
With the layer's model q(d) = [g.d] + 1/2 (rest |d|^2 + sum_i (lambda_i - rest) (u_i.d)^2) over the m
computed eigenpairs, a flip of weight j from one grid neighbour to the other changes d_j by delta_j and q by

    Delta_j = delta_j (g_j + rest d_j + sum_i mu_i z_i u_ij) + 1/2 delta_j^2 (rest + sum_i mu_i u_ij^2),

mu_i = lambda_i - rest, z = U d; all n candidates cost O(nm). Greedy rounds flip the best batch of improving
weights, backtracking when a batch interacts badly, until no single flip improves (a local optimum of
the flip neighbourhood; AdaRound's search space with CET's objective, no training). Every error stays
within one grid step of round-to-nearest's, so |d|_inf <= scale. Each clipping ratio is tried and the
best model value wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric
from cetopt.quant.quantizers import QuantizerSpec, channels, fake_quantize, grid


@dataclass(frozen=True)
class MajorAxisRounding:
    """Result for one layer and bit-width.

    Attributes:
        weight: the quantised weight (same shape and dtype as the input).
        ratio: the clipping ratio chosen.
        model_rtn, model_major: the model value q(d) of round-to-nearest's error and of the one chosen.
        flips: weights rounded away from nearest.
    """

    weight: torch.Tensor
    ratio: float
    model_rtn: float
    model_major: float
    flips: int


def _model(d: np.ndarray, z: np.ndarray, g: np.ndarray | None, rest: float, mu: np.ndarray) -> float:
    linear = float(g @ d) if g is not None else 0.0
    return linear + 0.5 * (rest * float(d @ d) + float(mu @ z ** 2))


def _greedy_flips(d: np.ndarray, alt: np.ndarray, quadric: LayerQuadric, use_gradient: bool,
                  max_rounds: int) -> tuple[np.ndarray, float, int]:
    u, rest = quadric.eigenvectors, quadric.rest
    mu = quadric.eigenvalues - rest
    g = quadric.gradient if use_gradient else None
    d, alt = d.copy(), alt.copy()
    z = u @ d
    value = _model(d, z, g, rest, mu)
    curvature = rest + (u ** 2).T @ mu
    batch = max(1, d.size // 50)
    flips = 0
    for _ in range(max_rounds):
        delta = alt - d
        slope = rest * d + u.T @ (mu * z) + (g if g is not None else 0.0)
        gain = delta * slope + 0.5 * delta ** 2 * curvature
        improving = np.flatnonzero(gain < -1e-15 * max(abs(value), 1e-30))
        if improving.size == 0:
            break
        while True:
            take = improving[np.argsort(gain[improving])[:batch]]
            new_d = d.copy()
            new_d[take] = alt[take]
            new_z = z + u[:, take] @ delta[take]
            new_value = _model(new_d, new_z, g, rest, mu)
            if new_value < value or batch == 1:
                break
            batch = max(1, batch // 4)
        if new_value >= value:
            break
        alt[take] = d[take]
        d, z, value = new_d, new_z, new_value
        flips += int(take.size)
    return d, value, flips


def major_axis_round(weight: torch.Tensor, bits: int, quadric: LayerQuadric, spec: QuantizerSpec = QuantizerSpec(),
                     *, ratios: Sequence[float] = (1.0, 0.95, 0.9, 0.85, 0.8), use_gradient: bool = False,
                     max_rounds: int = 200) -> MajorAxisRounding:
    """Quantise ``weight`` to ``bits`` on the quantiser's grid, rounding toward the quadric's major axes.

    Args:
        weight: the layer weight (torch layout); ``quadric`` must be of this layer (n = weight.numel()).
        bits: 2..16 (1-bit sign quantisation has no rounding choice).
        spec: grid layout (symmetric or not, per channel or not); its ``clip`` is replaced by ``ratios``.
        ratios: clipping ratios tried (1 = the full range).
        use_gradient: include g.d in the objective (LLC's first-order term) or only the curvature energy
            (the default: CET's rule; with every layer rounded at once the gradient version overfits the
            calibration gradient, e.g. MNIST-1D ResNet at 4 bits: 24.7% vs 91.6% accuracy).
    """
    if not 2 <= bits <= 16:
        raise ProblemError(f"major-axis rounding needs 2..16 bits, got {bits}", field="bits")
    if quadric.n != weight.numel():
        raise ProblemError(f"quadric of {quadric.name!r} has n = {quadric.n}, the weight {weight.numel()} values",
                           field="quadric")
    rows = channels(weight.detach().double().cpu(), spec.per_channel)
    flat_w = rows.reshape(-1).numpy()
    rtn = fake_quantize(weight.detach().double().cpu(), bits, QuantizerSpec(spec.symmetric, spec.per_channel))
    d_rtn = rtn.reshape(-1).numpy() - flat_w
    u, rest = quadric.eigenvectors, quadric.rest
    mu = quadric.eigenvalues - rest
    g = quadric.gradient if use_gradient else None
    model_rtn = _model(d_rtn, u @ d_rtn, g, rest, mu)
    best: tuple[float, np.ndarray, float, int] = (model_rtn, d_rtn, 1.0, 0)
    for ratio in ratios:
        ones = torch.full((rows.shape[0], 1), float(ratio), dtype=rows.dtype)
        cell = grid(rows, bits, spec.symmetric, ones)
        floor = torch.clamp(torch.floor(rows / cell.scale) + cell.zero, cell.low, cell.high)
        ceil = torch.clamp(floor + 1, cell.low, cell.high)
        nearest = cell.codes(rows)
        other = torch.where(nearest == floor, ceil, floor)
        d = (cell.values(nearest) - rows).reshape(-1).numpy()
        alt = (cell.values(other) - rows).reshape(-1).numpy()
        d, value, flips = _greedy_flips(d, alt, quadric, use_gradient, max_rounds)
        if value < best[0]:
            best = (value, d, float(ratio), flips)
    value, d, ratio, flips = best
    quantised = torch.from_numpy(flat_w + d).reshape(weight.shape).to(dtype=weight.dtype, device=weight.device)
    return MajorAxisRounding(weight=quantised, ratio=ratio, model_rtn=model_rtn, model_major=value, flips=flips)

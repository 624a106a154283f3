"""Seeded synthetic problems for solver tests and speed benchmarks (never for accuracy claims).

Each layer's loss follows the standard uniform-quantisation noise model used by HAWQ:
loss(b) = 1/2 (Tr H / n) ||Q_b(W) - W||^2 with ||Q_b(W) - W||^2 ~ n Delta^2 / 12 and Delta ~ range / 2^b,
so loss(b) = sensitivity x params x 4^-b up to a per-bit jitter that breaks exact convexity. Sensitivities
and layer sizes are log-normal / log-uniform as in real CNNs. ``metadata.source`` says "synthetic".
"""

from __future__ import annotations

import numpy as np

from cetopt.problem.model import AllocationProblem, Budget, Choice, Layer, Minimize

DEFAULT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def synthetic_problem(n_layers: int, *, n_choices: int = 6, seed: int = 0, avg_bits: float = 4.0,
                      bits_pool: tuple[int, ...] = DEFAULT_BITS, jitter: float = 0.1,
                      minimize: Minimize | str = Minimize.LOSS, max_loss: float | None = None) -> AllocationProblem:
    """A random problem with ``n_layers`` layers of ``n_choices`` bit-widths each, named
    ``synthetic-{n_layers}x{n_choices}-s{seed}``.

    Args:
        n_layers: number of layers.
        n_choices: candidate bit-widths per layer (drawn from ``bits_pool``, 8 always included).
        seed: numpy seed; the same seed gives the same problem (and the same file bytes).
        avg_bits: the size budget in mean bits per weight.
        jitter: relative log-normal noise on each loss (0 = exactly sensitivity x params x 4^-b).
        minimize, max_loss: the objective form (``size`` needs ``max_loss``).
    """
    if not 1 <= n_choices <= len(bits_pool):
        raise ValueError(f"n_choices must be in 1..{len(bits_pool)}, got {n_choices}")
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e3), np.log(2e6), n_layers)).astype(np.int64)
    sensitivity = np.exp(rng.normal(np.log(1e-6), 1.5, n_layers))
    layers = []
    others = [b for b in bits_pool if b != max(bits_pool)]
    for i in range(n_layers):
        picked = sorted(rng.choice(others, size=n_choices - 1, replace=False).tolist() + [max(bits_pool)])
        noise = np.exp(rng.normal(0.0, jitter, len(picked)))
        choices = tuple(
            Choice(bits=int(b), loss=float(sensitivity[i] * params[i] * 4.0 ** (-b) * k))
            for b, k in zip(picked, noise)
        )
        layers.append(Layer(name=f"layer{i:05d}", params=int(params[i]), choices=choices, macs=int(params[i]) * 64))
    budget = Budget(avg_bits=avg_bits, max_loss=max_loss) if minimize == Minimize.LOSS else Budget(max_loss=max_loss)
    return AllocationProblem(
        name=f"synthetic-{n_layers}x{n_choices}-s{seed}", layers=tuple(layers), budget=budget,
        minimize=Minimize(minimize),
        metadata={"source": "synthetic", "generator": "cetopt.problem.synthetic.synthetic_problem",
                  "seed": seed, "n_choices": n_choices, "jitter": jitter},
    )

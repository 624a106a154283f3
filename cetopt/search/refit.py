"""The surrogate re-fitted from measured whole plans, re-solved exactly each round.

The problem's additive costs c(l, k) (its surrogate) predict a plan's loss change as sum_l c(l, k_l) (plus any
interaction terms). Each round, every plan measured so far on the same calibration batches gives one equation,
and a correction model is fitted to them by ridge regression:

    measured(plan) ~ s * predicted(plan) + sum_l delta(l, k_l),     penalty lambda * sum delta^2,

one scale s for the curvature prior (unpenalised) and one correction per (layer, choice) pulled toward 0; lambda
is picked by exact leave-one-out error over a grid. The corrected problem (costs s c + delta, interactions times s)
is then solved exactly (dp, or the MILP where there are interactions) and its optimum is measured next; where it
was measured already, its single-switch neighbour that the corrected model likes best and that was not measured
is (Lawler's k best would cost k x layers exact solves a round); where none is left, a level switch of the best
measured plan (exploration).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cetopt.problem.model import AllocationProblem, Interaction
from cetopt.search.base import Seed
from cetopt.search.evaluator import Evaluator, option_key, option_of
from cetopt.search.moves import Levels, level_switch, mutation_steps, switch_neighbours

log = logging.getLogger(__name__)
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class RefitOptions:
    """batches: calibration batches every plan is measured on (0: all); solver: the exact backend for the
    corrected problem (empty: dp where it applies)."""

    batches: int = 0
    solver: str = ""


@dataclass(frozen=True)
class Correction:
    """A fitted correction: scale s, deltas per (layer, choice) in the flat order of the problem's choices, lambda
    and the leave-one-out RMSE it was picked by."""

    scale: float
    delta: np.ndarray
    lam: float
    loo_rmse: float


def plan_features(problem: AllocationProblem, choices: dict[str, int]) -> np.ndarray:
    """(n_choices,) one-hot of a plan's (layer, choice) pairs in the flat order of ``problem``'s choices."""
    offsets = np.cumsum([0] + [len(layer.choices) for layer in problem.layers])
    x = np.zeros(int(offsets[-1]))
    for i, layer in enumerate(problem.layers):
        x[offsets[i] + choices[layer.name]] = 1.0
    return x


def fit_correction(predicted: np.ndarray, onehot: np.ndarray, measured: np.ndarray,
                   lambdas: Sequence[float] = LAMBDAS) -> Correction:
    """Ridge fit of ``measured ~ s predicted + onehot @ delta`` (s unpenalised), lambda by leave-one-out.

    Solved in the plans' dual (n x n, n plans, however many features): with K = P P' and M = (K + lambda I)^-1,
    minimising over delta leaves lambda (y - s p)' M (y - s p), so s = p'M y / p'M p and delta = P' M (y - s p);
    the fit is linear in y with hat matrix H = K M + lambda M p c', c = M p / p'M p, which gives the exact
    leave-one-out residuals (y - H y) / (1 - diag H).

    Args:
        predicted: (n,) the surrogate's value of each plan; onehot: (n, d) plan features; measured: (n,).
    """
    p, P, y = np.asarray(predicted, float), np.asarray(onehot, float), np.asarray(measured, float)
    K = P @ P.T
    identity = np.eye(len(y))
    best: Correction | None = None
    for lam in lambdas:
        M = np.linalg.inv(K + lam * identity)
        curvature = float(p @ M @ p)
        c = M @ p / curvature if curvature > 0 else np.zeros_like(p)
        scale = float(c @ y)
        delta = P.T @ (M @ (y - scale * p))
        hat = K @ M + lam * np.outer(M @ p, c)
        residual = (y - hat @ y) / np.maximum(1.0 - np.diag(hat), 1e-9)
        rmse = float(np.sqrt(np.mean(residual ** 2)))
        if best is None or rmse < best.loo_rmse:
            best = Correction(scale=scale, delta=delta, lam=float(lam), loo_rmse=rmse)
    assert best is not None
    return best


def corrected_problem(problem: AllocationProblem, correction: Correction) -> AllocationProblem:
    """``problem`` with costs s c + delta (a negative fitted scale is clipped to 0) and interactions times s."""
    scale = max(correction.scale, 0.0)
    layers, at = [], 0
    for layer in problem.layers:
        choices = tuple(dataclasses.replace(c, loss=scale * c.loss + float(correction.delta[at + i]))
                        for i, c in enumerate(layer.choices))
        at += len(layer.choices)
        layers.append(dataclasses.replace(layer, choices=choices))
    terms = tuple(Interaction(a=t.a, b=t.b, loss=tuple(tuple(scale * v for v in row) for row in t.loss))
                  for t in problem.interactions)
    return problem.with_changes(layers=tuple(layers), interactions=terms)


def corrected_value(evaluator: Evaluator, problem: AllocationProblem,
                    correction: Correction) -> Callable[[np.ndarray], float]:
    """The corrected model's value of an option vector (the measurement's units)."""
    scale = max(correction.scale, 0.0)
    offsets = np.cumsum([0] + [len(layer.choices) for layer in problem.layers])
    table = np.zeros((evaluator.compiled.n_groups, evaluator.compiled.max_options))
    for g, group in enumerate(evaluator.compiled.groups):  # each group option's summed corrections
        for o, row in enumerate(group.options):
            table[g, o] = sum(correction.delta[offsets[m] + c] for m, c in zip(group.members, row))
    rows = np.arange(evaluator.compiled.n_groups)

    def value(option: np.ndarray) -> float:
        return scale * evaluator.predicted(option) * evaluator.compiled.loss_unit + float(table[rows, option].sum())

    return value


class Refit:
    name = "refit"
    description = "the additive surrogate corrected by ridge regression on measured plans, re-solved exactly"
    Options = RefitOptions

    def search(self, evaluator: Evaluator, seeds: Sequence[Seed], options: RefitOptions,
               rng: np.random.Generator) -> list[np.ndarray]:
        from cetopt.solvers.api import default_solver, solve

        problem = evaluator.compiled.problem
        batches = range(options.batches if 0 < options.batches < evaluator.n_batches else evaluator.n_batches)
        levels = Levels(evaluator)
        measured: dict[tuple[int, ...], float] = {}

        def measure(option: np.ndarray, event: str) -> None:
            measured[option_key(option)] = evaluator.mean(option, batches)
            best = min(measured, key=measured.__getitem__)
            evaluator.note(np.asarray(best), event)

        for seed in seeds:
            if option_key(seed.option) not in measured:
                measure(seed.option, f"seed {seed.label}")
        while True:
            keys = list(measured)
            if len(keys) >= 2:
                correction = fit_correction(
                    np.array([evaluator.predicted(np.asarray(k)) * evaluator.compiled.loss_unit for k in keys]),
                    np.array([plan_features(problem, evaluator.choices(np.asarray(k))) for k in keys]),
                    np.array([measured[k] for k in keys]))
                fixed = corrected_problem(problem, correction)
                answer = solve(fixed, options.solver or default_solver(fixed))
                nxt = option_of(evaluator, dict(answer.choices)) if answer.success else None
                if nxt is not None and option_key(nxt) in measured:  # its best unmeasured single-switch neighbour
                    value = corrected_value(evaluator, problem, correction)
                    nxt = next((c for _, c in switch_neighbours(levels, nxt, value) if option_key(c) not in measured),
                               None)
                if nxt is not None and evaluator.feasible(nxt):
                    measure(nxt, f"refit (scale {correction.scale:.3g}, lambda {correction.lam:g}, "
                                 f"loo rmse {correction.loo_rmse:.3g})")
                    continue
            best = np.asarray(min(measured, key=measured.__getitem__))
            for _ in range(20):
                child = level_switch(levels, best, rng, mutation_steps(rng))
                if child is not None and option_key(child) not in measured:
                    measure(child, "explore")
                    break
            else:
                break
        return [np.asarray(k) for k in sorted(measured, key=measured.__getitem__)]

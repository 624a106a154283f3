"""A continuous convex relaxation in the bit-widths themselves (reverse water-filling), then rounding.

Rate-distortion of a uniform quantiser: the error energy of b bits scales as 4^-b, so a layer's
predicted loss is modelled as c_g 4^-b_g with c_g fitted (least squares) to its discrete candidates.
The continuous problem

    minimise  sum_g c_g exp(-ln4 b_g)   s.t.  sum_g n_g b_g <= S,   b_min,g <= b_g <= b_max,g

is convex (a CVXPY model, DCP exp); its optimum is the reverse water-filling solution
b_g = clip(log4(c_g ln4 / (mu n_g)), b_min, b_max) for the multiplier mu of the size budget (the test
checks CVXPY against that closed form). Each b_g is rounded to the nearest candidate and the budget is
repaired by single-layer moves. The fit is a model, not a bound: the continuous value is reported in
``extra`` for comparison with the discrete optimum, and the answer is only ``feasible``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.local_search import improve, is_feasible
from cetopt.solvers.result import Outcome, Status

LN4 = math.log(4.0)


@dataclass(frozen=True)
class WaterfillingOptions:
    """Options of the water-filling relaxation.

    Attributes:
        improve: after rounding, spend leftover budget / repair by single-layer moves.
    """

    improve: bool = True


def fit_rate_distortion(bits: np.ndarray, loss: np.ndarray) -> float:
    """Least-squares c in loss ~ c 4^-bits over one group's options (clipped to a tiny positive value)."""
    basis = np.power(4.0, -bits)
    c = float(basis @ loss / (basis @ basis))
    return max(c, 1e-300)


def water_level(c: np.ndarray, n: np.ndarray, low: np.ndarray, high: np.ndarray, budget: float) -> np.ndarray:
    """The closed-form reverse water-filling bits for a size budget (bisection on the multiplier)."""
    def bits_at(log_mu: float) -> np.ndarray:
        return np.clip((np.log(c * LN4 / n) - log_mu) / LN4, low, high)

    lo, hi = -800.0, 800.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(n @ bits_at(mid)) > budget:
            lo = mid
        else:
            hi = mid
    return bits_at(hi)


class WaterfillingSolver(Solver):
    """Continuous reverse water-filling over bit-widths (CVXPY), rounded to candidates; no bound."""

    name = "waterfilling"
    description = "continuous 4^-b relaxation in the bits (reverse water-filling, CVXPY) + rounding; heuristic"
    requires = ("cvxpy",)
    install_hint = "pip install 'cvxpy==1.8.2'"
    capabilities = Capabilities(exact=False, proves_bound=False, interactions=False, minimize_size=False,
                                resources=frozenset({"size"}), max_resources=1, loss_bound=False)
    Options = WaterfillingOptions

    def run(self, compiled: CompiledProblem, options: WaterfillingOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        import cvxpy as cp

        names = compiled.problem.layer_names
        params = {layer.name: layer.params for layer in compiled.problem.layers}
        n = np.array([sum(params[names[m]] for m in g.members) for g in compiled.groups], dtype=np.float64)
        option_bits = [g.size / n_g for g, n_g in zip(compiled.groups, n)]
        c = np.array([fit_rate_distortion(b, g.loss) for b, g in zip(option_bits, compiled.groups)])
        low = np.array([b.min() for b in option_bits])
        high = np.array([b.max() for b in option_bits])
        if compiled.max_size is None:
            return Outcome(Status.ERROR, message="waterfilling needs a size budget")
        if float(n @ low) > compiled.max_size:
            return Outcome(Status.INFEASIBLE, message="even the smallest candidates exceed the size budget")
        # well-scaled: bits measured from the budget's mean level a, weights normalised to max 1
        a = compiled.max_size / float(n.sum())
        weights = c * np.power(4.0, -a)
        scale = float(weights.max())
        b = cp.Variable(len(n))
        model = cp.Problem(cp.Minimize(cp.sum(cp.multiply(weights / scale, cp.exp(-LN4 * (b - a))))),
                           [n @ b <= compiled.max_size, b >= low, b <= high])
        model.solve()
        if b.value is None:
            return Outcome(Status.ERROR, message=f"CVXPY returned {model.status}")
        continuous = np.clip(np.asarray(b.value, dtype=np.float64), low, high)
        option = np.array([int(np.argmin(np.abs(ob - x) + 1e-9 * ob)) for ob, x in zip(option_bits, continuous)])
        if options.improve or not is_feasible(compiled, option):
            option = improve(compiled, option)
        if not is_feasible(compiled, option):
            return Outcome(Status.NO_SOLUTION, message="rounding and single-layer repairs found no feasible plan")
        return Outcome(Status.FEASIBLE, choice_index=option, message="continuous relaxation rounded; a model, not a bound",
                       extra={"continuous_bits": continuous.tolist(), "continuous_value": float(model.value) * scale * compiled.loss_unit,
                              "budget_bits": a,
                              "cvxpy_status": model.status})

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

``method = "cvxpy"`` (default) solves the convex program with CVXPY under the time limit (Clarabel's
``time_limit``; when it strikes, when half the limit has gone before CVXPY could start (its canonicalisation
cannot be interrupted), or when CVXPY fails, the closed form is used and ``extra["method"]`` says so);
``method = "closed-form"`` uses the bisection alone (milliseconds at 10^6 layers).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cetopt.errors import SolverOptionError
from cetopt.problem.compiled import CompiledProblem
from cetopt.solvers.deadline import Deadline
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
    method: str = "cvxpy"

    def __post_init__(self) -> None:
        if self.method not in ("cvxpy", "closed-form"):
            raise SolverOptionError(f"waterfilling: method must be 'cvxpy' or 'closed-form', got {self.method!r:.40}")


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
    startup_seconds_per_group = 1e-4  # the per-group 4^-b fit (measured: ~1 s per 10,000 groups, loaded 2 cores)

    def run(self, compiled: CompiledProblem, options: WaterfillingOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        deadline = Deadline(time_limit)
        names = compiled.problem.layer_names
        params = {layer.name: layer.params for layer in compiled.problem.layers}
        n = np.array([sum(params[names[m]] for m in g.members) for g in compiled.groups], dtype=np.float64)
        option_bits = [g.size / n_g for g, n_g in zip(compiled.groups, n)]
        c = np.array([fit_rate_distortion(b, g.loss) for b, g in zip(option_bits, compiled.groups)])
        low = np.array([b.min() for b in option_bits])
        high = np.array([b.max() for b in option_bits])
        if compiled.max_size is None:
            return Outcome(Status.ERROR, message="waterfilling needs a size budget")
        if not (np.isfinite(c).all() and np.isfinite(low).all() and np.isfinite(high).all()):
            return Outcome(Status.ERROR, message="the 4^-b fit gave non-finite coefficients; use dp or greedy")
        if float(n @ low) > compiled.max_size:
            return Outcome(Status.INFEASIBLE, message="even the smallest candidates exceed the size budget")
        extra: dict[str, object] = {"method": "closed-form"}
        continuous = None
        if float(n @ high) <= compiled.max_size:  # the budget cannot bind: every group at its widest
            continuous, extra["method"] = high.copy(), "unconstrained"
        elif options.method == "cvxpy":
            continuous = _cvxpy_bits(c, n, low, high, compiled.max_size, deadline, extra)
        if continuous is None:
            continuous = water_level(c, n, low, high, compiled.max_size)
        option = np.array([int(np.argmin(np.abs(ob - x) + 1e-9 * ob)) for ob, x in zip(option_bits, continuous)])
        if not is_feasible(compiled, option) or (options.improve and not deadline.expired()):
            option = improve(compiled, option)
        elif options.improve:  # the limit has struck: the rounded plan is feasible, so it is the answer
            extra["improve"] = "skipped: time limit"
            logging.getLogger(__name__).info("waterfilling: the time limit struck; the rounded plan is returned "
                                             "without single-layer improvement")
        if not is_feasible(compiled, option):
            return Outcome(Status.NO_SOLUTION, message="rounding and single-layer repairs found no feasible plan")
        value = float(c @ np.power(4.0, -continuous)) * compiled.loss_unit
        return Outcome(Status.FEASIBLE, choice_index=option, message="continuous relaxation rounded; a model, not a "
                       "bound", limit="time" if extra.get("cvxpy_status") == "time_limit" else None,
                       extra={**extra, "continuous_bits": continuous.tolist(), "continuous_value": value,
                              "budget_bits": compiled.max_size / float(n.sum())})


def _cvxpy_bits(c: np.ndarray, n: np.ndarray, low: np.ndarray, high: np.ndarray, budget: float,
                deadline: Deadline, extra: dict[str, object]) -> np.ndarray | None:
    """The continuous optimum by CVXPY (Clarabel, within the deadline), or None when it did not finish."""
    if deadline.limit is not None and deadline.elapsed() > 0.5 * deadline.limit:
        extra["cvxpy_status"] = "time_limit"  # no room left for the (uninterruptible) canonicalisation
        return None
    import cvxpy as cp

    if deadline.limit is not None and deadline.elapsed() > 0.5 * deadline.limit:
        extra["cvxpy_status"] = "time_limit"  # importing CVXPY (seconds when cold) took the room
        return None
    seconds = deadline.remaining()
    # well-scaled: bits measured from the budget's mean level a, weights normalised to max 1
    a = float(np.clip(budget / float(n.sum()), low.min(), high.max()))
    weights = c * np.power(4.0, -a)
    scale = float(weights.max())
    if not (np.isfinite(scale) and scale > 0):
        extra["cvxpy_status"] = "weights out of range"
        return None
    b = cp.Variable(len(n))
    model = cp.Problem(cp.Minimize(cp.sum(cp.multiply(weights / scale, cp.exp(-LN4 * (b - a))))),
                       [n @ b <= budget, b >= low, b <= high])
    kwargs = {} if seconds is None else {"time_limit": float(seconds)}
    try:
        model.solve(solver="CLARABEL", **kwargs)
    except cp.error.SolverError as err:
        extra["cvxpy_status"] = f"solver_error: {err}"
        return None
    extra["cvxpy_status"] = "time_limit" if model.status == cp.USER_LIMIT else model.status
    if b.value is None or model.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        return None
    extra["method"] = "cvxpy"
    return np.clip(np.asarray(b.value, dtype=np.float64), low, high)

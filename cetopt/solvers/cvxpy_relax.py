"""The convex relaxation through CVXPY: one-hot choices relaxed to the simplex, then rounded.

    min  l.x + x'Qx      s.t.  x >= 0, sum of each group's x = 1, size.x <= S, bops.x <= B, ...

Without interaction terms this is an LP (the grouped knapsack's LP relaxation). With them, Q holds the
pairwise blocks. If Q is not positive semidefinite the relaxation is non-convex; ``convexify="diagonal"``
(default) then adds t (x_i^2 - x_i) with t = -lambda_min(Q): identical on every one-hot point and
convex, so the relaxed optimum is still a valid lower bound. ``convexify="refuse"`` declines instead.
The relaxed optimum is the certified lower bound; the answer is rounded (largest x per group) and then
repaired and improved by single-layer moves, so the gap between the two is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cetopt.errors import SolverOptionError
from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.local_search import improve, is_feasible
from cetopt.solvers.result import Outcome, Status

# relative safety margin subtracted from the solver's optimum before it is reported as a bound
BOUND_MARGIN = 1e-7


@dataclass(frozen=True)
class CvxpyOptions:
    """Options of the cvxpy backend.

    Attributes:
        convexify: "diagonal" (shift a non-PSD Q, keeping the bound valid) or "refuse".
        solver: CVXPY solver name ("" = HIGHS for LPs, CLARABEL for QPs).
        improve: repair and improve the rounded answer with single-layer moves.
    """

    convexify: str = "diagonal"
    solver: str = ""
    improve: bool = True


def _quadratic(compiled: CompiledProblem, offsets: np.ndarray, n: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for pair in compiled.pairs:
        ka, kb = pair.matrix.shape
        ii, jj = np.meshgrid(np.arange(ka), np.arange(kb), indexing="ij")
        r, c = offsets[pair.a] + ii.ravel(), offsets[pair.b] + jj.ravel()
        half = pair.matrix.ravel() / 2
        rows += [r, c]
        cols += [c, r]
        vals += [half, half]
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _min_eigenvalue(matrix: sp.csr_matrix) -> float:
    if matrix.shape[0] <= 2000:
        return float(np.linalg.eigvalsh(matrix.toarray()).min())
    from scipy.sparse.linalg import eigsh

    return float(eigsh(matrix, k=1, which="SA", return_eigenvectors=False, tol=1e-8)[0])


class CvxpyRelaxationSolver(Solver):
    """Convex relaxation (LP / convex QP) via CVXPY, with rounding; reports the relaxation as the bound."""

    name = "cvxpy"
    description = "CVXPY convex relaxation + rounding; the relaxation value is the bound"
    requires = ("cvxpy",)
    install_hint = "pip install 'cvxpy==1.8.2' 'highspy==1.11.0'"
    capabilities = Capabilities(exact=False, proves_bound=True, interactions=True)
    Options = CvxpyOptions

    def run(self, compiled: CompiledProblem, options: CvxpyOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        import cvxpy as cp

        if options.convexify not in ("diagonal", "refuse"):
            raise SolverOptionError(f"cvxpy: convexify must be 'diagonal' or 'refuse', got {options.convexify!r}")
        groups = compiled.groups
        sizes = np.array([g.n_options for g in groups])
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        n = int(sizes.sum())
        loss = np.concatenate([g.loss for g in groups])
        size = np.concatenate([g.size for g in groups])
        x = cp.Variable(n, nonneg=True)
        one_hot = sp.csr_matrix((np.ones(n), (np.repeat(np.arange(len(groups)), sizes), np.arange(n))),
                                shape=(len(groups), n))
        constraints = [one_hot @ x == 1]
        extra: dict[str, Any] = {}
        loss_scale = float(np.abs(loss).max(initial=0.0)) or 1.0
        loss_expr: Any = (loss / loss_scale) @ x
        if compiled.pairs:
            q = _quadratic(compiled, offsets, n) / loss_scale
            lam_min = _min_eigenvalue(q)
            extra["q_min_eigenvalue"] = lam_min * loss_scale
            shift = 0.0
            if lam_min < -1e-10:
                if options.convexify == "refuse":
                    return Outcome(Status.ERROR, extra=extra, message=(
                        f"interaction matrix is not PSD (min eigenvalue {lam_min * loss_scale:.3g}); "
                        "use convexify='diagonal' or an exact backend"))
                shift = -lam_min * (1 + 1e-6) + 1e-12
            extra["convexify_shift"] = shift * loss_scale
            q_psd = q + shift * sp.eye(n)
            loss_expr = loss_expr + cp.quad_form(x, q_psd, assume_PSD=True) - shift * cp.sum(x)
        for name, limit, per_group in compiled.resources():
            coef = np.concatenate([np.asarray(v, dtype=np.float64) for v in per_group])
            constraints.append((coef / limit) @ x <= 1.0)
        if compiled.max_loss is not None:
            constraints.append(loss_expr <= compiled.max_loss / loss_scale)
        if compiled.minimize is Minimize.SIZE:
            obj_scale = float(size.max())
            objective = (size / obj_scale) @ x
        else:
            obj_scale = loss_scale
            objective = loss_expr
        problem = cp.Problem(cp.Minimize(objective), constraints)
        solver_name = options.solver or ("HIGHS" if not compiled.pairs else "CLARABEL")
        kwargs: dict[str, Any] = {}
        if time_limit is not None and solver_name == "HIGHS":
            kwargs["time_limit"] = float(time_limit)
        try:
            problem.solve(solver=solver_name, **kwargs)
        except cp.error.SolverError as err:
            return Outcome(Status.ERROR, message=f"CVXPY/{solver_name} failed: {err}", extra=extra)
        extra["relaxation_status"] = problem.status
        if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            return Outcome(Status.INFEASIBLE, message=f"the convex relaxation is {problem.status}", extra=extra)
        if problem.status != cp.OPTIMAL or x.value is None:
            return Outcome(Status.ERROR, message=f"CVXPY/{solver_name} ended with status {problem.status}",
                           extra=extra)
        relaxed = float(problem.value) * obj_scale
        bound = relaxed - BOUND_MARGIN * max(1.0, abs(relaxed))
        extra["relaxation_value"] = relaxed
        values = np.asarray(x.value)
        option = np.array([int(np.argmax(values[o:o + k])) for o, k in zip(offsets, sizes)], dtype=np.int64)
        extra["fractional_groups"] = int(sum(values[o:o + k].max() < 1 - 1e-6 for o, k in zip(offsets, sizes)))
        if options.improve:
            option = improve(compiled, option)
        if not is_feasible(compiled, option):
            return Outcome(Status.NO_SOLUTION, bound=bound, extra=extra, message=(
                "the rounded relaxation could not be repaired by single-layer moves; use an exact backend"))
        return Outcome(Status.FEASIBLE, option=option, bound=bound, extra=extra,
                       message=f"{solver_name} relaxation rounded ({extra['fractional_groups']} fractional groups)")

"""The convex relaxation through CVXPY: one-hot choices relaxed to the simplex, then rounded.

    min  l.x + x'Qx      s.t.  x >= 0, sum of each group's x = 1, size.x <= S, bops.x <= B, ...

Without interaction terms this is an LP (the grouped knapsack's LP relaxation). With them there are two
relaxations (``relaxation`` option):

- ``qp``: Q holds the pairwise blocks. If Q is not positive semidefinite the relaxation is non-convex;
  ``convexify="diagonal"`` then adds t (x_i^2 - x_i) with t = -lambda_min(Q): identical on every one-hot
  point and convex, so the relaxed optimum is still a valid lower bound. ``convexify="refuse"`` declines.
- ``rlt``: the LP relaxation of the exact MILP (cetopt.solvers.linear_model), with continuous y for the
  products x_a x_b under the RLT equalities. Always convex, often tighter, solved by HiGHS.
- ``auto`` (default): ``qp`` when Q is PSD and no loss bound makes it a quadratic constraint, else ``rlt``.

The relaxation is solved on the reduced problem of :mod:`cetopt.solvers.mip` (LP reduced-cost fixing,
resource fixing, dominance): it holds every allocation no worse than the greedy incumbent, so its
relaxed optimum is still a lower bound on the full problem's optimum, and the LP shrinks to the few
options that can matter (on 10,000 layers x 8 choices: about a third of them); without interaction terms
and with one constraint row, only each group's lower convex hull is kept (the LP optimum lies on it).

The relaxed optimum is the certified lower bound; the answer is rounded (largest x per group) and then
repaired and improved by single-layer moves, so the gap between the two is known. A time limit is
passed to the CVXPY solver; when it strikes, the greedy incumbent is returned with ``limit: "time"``.
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
from cetopt.solvers.linear_model import build_linear_model
from cetopt.solvers.local_search import improve, is_feasible
from cetopt.solvers.deadline import Deadline
from cetopt.solvers.mip import Prepared, prepare
from cetopt.solvers.reduce import lp_hull
from cetopt.solvers.result import Outcome, Status

# relative safety margin subtracted from the solver's optimum before it is reported as a bound
BOUND_MARGIN = 1e-7
# CVXPY's canonicalisation cannot be interrupted: the relaxation is built only while less than this
# fraction of the time limit has gone (else the greedy incumbent is returned with limit "time")
ROOM_NEEDED = 0.5


@dataclass(frozen=True)
class CvxpyOptions:
    """Options of the cvxpy backend.

    Attributes:
        relaxation: "auto", "qp" or "rlt" (see the module docstring).
        convexify: for "qp": "diagonal" (shift a non-PSD Q, keeping the bound valid) or "refuse".
        solver: CVXPY solver name ("" = HIGHS for LPs, CLARABEL for QPs).
        improve: repair and improve the rounded answer with single-layer moves.
    """

    relaxation: str = "auto"
    convexify: str = "diagonal"
    solver: str = ""
    improve: bool = True

    def __post_init__(self) -> None:
        if self.convexify not in ("diagonal", "refuse"):
            raise SolverOptionError(f"cvxpy: convexify must be 'diagonal' or 'refuse', got {self.convexify!r:.40}")
        if self.relaxation not in ("auto", "qp", "rlt"):
            raise SolverOptionError(f"cvxpy: relaxation must be 'auto', 'qp' or 'rlt', got {self.relaxation!r:.40}")


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


@dataclass
class _LinearForm:
    """The relaxation as min c.z s.t. A_eq z = b_eq, A_ub z <= b_ub, 0 <= z <= 1, with the CVXPY constraints
    whose dual values are the multipliers of the A_eq and A_ub rows (in order)."""

    c: np.ndarray
    a_eq: sp.csr_matrix
    b_eq: np.ndarray
    a_ub: sp.csr_matrix
    b_ub: np.ndarray
    eq: list[Any]
    ub: list[Any]


@dataclass
class _Relaxed:
    problem: Any  # cvxpy.Problem
    x: Any  # the one-hot part of the variables, as a cvxpy expression
    obj_scale: float
    solver: str
    kind: str
    linear: _LinearForm | None = None  # None for a QP with interaction terms


def _duals(constraints: list[Any], rows: int) -> np.ndarray | None:
    if rows == 0:
        return np.zeros(0)
    values = [c.dual_value for c in constraints]
    if any(v is None for v in values):
        return None
    out = np.concatenate([np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel() for v in values])
    return out if out.shape == (rows,) and np.isfinite(out).all() else None


def dual_bound(form: _LinearForm) -> float | None:
    """A lower bound on the LP's optimum from the solver's multipliers, by weak duality: for any y and any
    u >= 0, b_eq.y - b_ub.u + sum_i min(0, (c - A_eq'y + A_ub'u)_i) <= c.z for every feasible z in [0, 1]^n.
    Computed here, so an inaccurate solver can make it weaker, never above the optimum (up to the float
    error of the sums, subtracted). Both sign conventions of the multipliers are tried (each gives a valid
    bound). None when the solver returned no multipliers."""
    y, u = _duals(form.eq, form.a_eq.shape[0]), _duals(form.ub, form.a_ub.shape[0])
    if y is None or u is None:
        return None
    best = -np.inf
    for sy in (1.0, -1.0):
        for su in (1.0, -1.0):
            yy, uu = sy * y, np.maximum(su * u, 0.0)
            reduced = form.c - form.a_eq.T @ yy + form.a_ub.T @ uu
            terms = np.concatenate((form.b_eq * yy, -form.b_ub * uu, np.minimum(reduced, 0.0)))
            value = float(terms.sum()) - 1e-12 * float(np.abs(terms).sum()) * max(1, terms.size) ** 0.5
            best = max(best, value)
    return best if np.isfinite(best) else None


def _solve(cp: Any, relaxed: _Relaxed, seconds: float | None) -> str:
    """Solve the relaxation within ``seconds`` (HiGHS and Clarabel take a time limit); its CVXPY status."""
    kwargs: dict[str, Any] = {}
    if seconds is not None and relaxed.solver in ("HIGHS", "CLARABEL"):
        kwargs["time_limit"] = float(seconds)
    try:
        relaxed.problem.solve(solver=relaxed.solver, **kwargs)
    except cp.error.SolverError as err:
        return f"solver_error ({err})"
    return str(relaxed.problem.status)


def _without_relaxation(prepared: Prepared, why: str, extra: dict[str, Any]) -> Outcome:
    """The relaxation gave nothing usable (time limit, solver failure): the greedy incumbent, if feasible."""
    timed_out = prepared.deadline.limit is not None and prepared.deadline.remaining() <= 0.1 * prepared.deadline.limit
    limit = "time" if timed_out or "limit" in why else None
    incumbent = prepared.incumbent
    if incumbent.feasible:
        return Outcome(Status.FEASIBLE, choice_index=incumbent.choice_index, bound=incumbent.plan.bound, limit=limit,
                       extra=extra, message=f"{why}; returning the greedy incumbent with its LP bound")
    return Outcome(Status.NO_SOLUTION if limit else Status.ERROR, limit=limit, extra=extra, message=why)


class CvxpyRelaxationSolver(Solver):
    """Convex relaxation (LP / convex QP / RLT LP) via CVXPY, with rounding; the relaxation is the bound."""

    name = "cvxpy"
    description = "CVXPY convex relaxation + rounding; the relaxation value is the bound"
    requires = ("cvxpy",)
    install_hint = "pip install 'cvxpy==1.8.2' 'highspy==1.11.0'"
    capabilities = Capabilities(exact=False, proves_bound=True, interactions=True)
    Options = CvxpyOptions
    startup_seconds_per_group = 5e-5  # building the model (measured: ~0.5 s per 10,000 groups, loaded 2 cores)

    def run(self, compiled: CompiledProblem, options: CvxpyOptions, *, time_limit: float | None,
            seed: int) -> Outcome:
        deadline = Deadline(time_limit)  # importing CVXPY (seconds on a cold start) counts too
        import cvxpy as cp

        prepared = prepare(compiled, time_limit, deadline)
        if deadline.limit is not None and deadline.elapsed() > ROOM_NEEDED * deadline.limit:
            return _without_relaxation(prepared, "the time limit left no room to build the relaxation", {})
        reduction = lp_hull(prepared.reduction) or prepared.reduction  # the LP needs only hull vertices
        full, compiled = compiled, reduction.compiled
        groups = compiled.groups
        sizes = np.array([g.n_options for g in groups])
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        n = int(sizes.sum())
        extra: dict[str, Any] = {}
        kind, q_matrix, lam_min = _relaxation_kind(compiled, options, offsets, n, extra)
        if kind == "refused":
            return Outcome(Status.ERROR, extra=extra, message=(
                f"interaction matrix is not PSD (min eigenvalue {lam_min:.3g}); use convexify='diagonal', "
                "relaxation='rlt' or an exact backend"))
        extra["relaxation"] = kind
        if kind == "rlt":
            relaxed = self._rlt(compiled, options, cp)
        else:
            relaxed = self._qp(compiled, options, cp, offsets, n, q_matrix, lam_min, extra)
        status = _solve(cp, relaxed, prepared.deadline.remaining())
        extra["relaxation_status"] = status
        extra.update(prepared.stats())
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE) and not prepared.incumbent.feasible:
            return Outcome(Status.INFEASIBLE, message=f"the convex relaxation is {status}", extra=extra)
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or relaxed.x.value is None:
            return _without_relaxation(prepared, f"CVXPY/{relaxed.solver} ended with status {status}", extra)
        notes: list[str] = []
        value, bound = _relaxation_bound(relaxed, status == cp.OPTIMAL, extra, notes)
        extra["relaxation_value"] = value * (compiled.loss_unit if compiled.minimize is Minimize.LOSS else 1.0)
        values = np.asarray(relaxed.x.value, dtype=np.float64)
        group = np.repeat(np.arange(len(sizes)), sizes)
        option = np.lexsort((-values, group))[offsets] - offsets
        extra["fractional_groups"] = int((np.maximum.reduceat(values, offsets) < 1 - 1e-6).sum())
        option = reduction.lift(option)
        if options.improve:
            option = improve(full, option)
        feasible = is_feasible(full, option)
        found = [full.objective_values(option)[0]] if feasible else []
        if prepared.incumbent.feasible:
            found.append(prepared.incumbent.objective)
        if bound is not None and found and bound > min(found) + 1e-9 * max(abs(min(found)), abs(bound)):
            extra["rejected_bound"] = bound
            notes.append(f"the relaxation's value {bound:.10g} exceeds the objective {min(found):.10g} of a feasible "
                         "plan found, so it is not reported as a certified bound")
            bound = None
        note = ("; " + "; ".join(notes)) if notes else ""
        if not feasible:
            return Outcome(Status.NO_SOLUTION, bound=bound, extra=extra, message=(
                "the rounded relaxation could not be repaired by single-layer moves; use an exact backend" + note))
        return Outcome(Status.FEASIBLE, choice_index=option, bound=bound, extra=extra, message=(
            f"{kind.upper()} relaxation via {relaxed.solver}, rounded ({extra['fractional_groups']} fractional groups)"
            + note))

    def _rlt(self, compiled: CompiledProblem, options: CvxpyOptions, cp: Any) -> _Relaxed:
        model = build_linear_model(compiled)
        z = cp.Variable(model.n_vars)
        constraints = [z >= 0, z <= 1, model.a_eq @ z == model.b_eq]
        if model.a_ub.shape[0]:
            constraints.append(model.a_ub @ z <= model.b_ub)
        problem = cp.Problem(cp.Minimize(model.c @ z), constraints)
        linear = _LinearForm(np.asarray(model.c, dtype=np.float64), sp.csr_matrix(model.a_eq),
                             np.asarray(model.b_eq, dtype=np.float64), sp.csr_matrix(model.a_ub),
                             np.asarray(model.b_ub, dtype=np.float64), [constraints[2]], constraints[3:])
        return _Relaxed(problem, z[: model.n_x], model.obj_scale, options.solver or "HIGHS", "rlt", linear)

    def _qp(self, compiled: CompiledProblem, options: CvxpyOptions, cp: Any, offsets: np.ndarray, n: int,
            q_matrix: sp.csr_matrix | None, lam_min: float, extra: dict[str, Any]) -> _Relaxed:
        groups = compiled.groups
        sizes = np.array([g.n_options for g in groups])
        loss = np.concatenate([g.loss for g in groups])
        size = np.concatenate([g.size for g in groups])
        x = cp.Variable(n, nonneg=True)
        one_hot = sp.csr_matrix((np.ones(n), (np.repeat(np.arange(len(groups)), sizes), np.arange(n))),
                                shape=(len(groups), n))
        constraints = [one_hot @ x == 1]
        rows: list[np.ndarray] = []  # the <= 1 rows, for the dual certificate (LP case)
        loss_scale = float(np.abs(loss).max(initial=0.0)) or 1.0
        loss_expr: Any = (loss / loss_scale) @ x
        if q_matrix is not None:
            shift = 0.0 if lam_min >= -1e-10 else -lam_min * (1 + 1e-6) + 1e-12
            extra["convexify_shift"] = shift
            q_psd = (q_matrix + shift * sp.eye(n)) / loss_scale
            loss_expr = loss_expr + cp.quad_form(x, q_psd, assume_PSD=True) - (shift / loss_scale) * cp.sum(x)
        for _, limit, per_group in compiled.resources():
            coef = np.concatenate([np.asarray(v, dtype=np.float64) for v in per_group])
            constraints.append((coef / limit) @ x <= 1.0)
            rows.append(coef / limit)
        if compiled.max_loss is not None:
            constraints.append(loss_expr <= compiled.max_loss / loss_scale)
            rows.append(loss / loss_scale)
        if compiled.minimize is Minimize.SIZE:
            obj_scale = float(size.max())
            objective = (size / obj_scale) @ x
            c = size / obj_scale
        else:
            obj_scale, objective = loss_scale, loss_expr
            c = loss / loss_scale
        linear = None
        if q_matrix is None:
            b_ub = np.ones(len(rows))
            if compiled.max_loss is not None:  # the row as built: loss / scale <= max_loss / scale
                b_ub[-1] = compiled.max_loss / loss_scale
            a_ub = sp.csr_matrix(np.vstack(rows)) if rows else sp.csr_matrix((0, n))
            linear = _LinearForm(c, one_hot, np.ones(len(groups)), a_ub, b_ub, [constraints[0]], constraints[1:])
        solver = options.solver or ("HIGHS" if q_matrix is None else "CLARABEL")
        return _Relaxed(cp.Problem(cp.Minimize(objective), constraints), x, obj_scale, solver, "qp", linear)


def _relaxation_kind(compiled: CompiledProblem, options: CvxpyOptions, offsets: np.ndarray, n: int,
                     extra: dict[str, Any]) -> tuple[str, sp.csr_matrix | None, float]:
    """The relaxation to build ("lp" without interactions; else "qp" or "rlt", "auto" taking the QP where the
    interaction matrix is PSD and there is no loss bound; "refused" for a non-PSD QP under convexify='refuse'),
    the (n, n) interaction matrix and its least eigenvalue (recorded in ``extra``)."""
    if not compiled.pairs:
        return "lp", None, 0.0
    kind = options.relaxation
    q_matrix = _quadratic(compiled, offsets, n)
    lam_min = _min_eigenvalue(q_matrix)
    extra["q_min_eigenvalue"] = lam_min
    if kind == "auto":
        kind = "qp" if lam_min >= -1e-10 and compiled.max_loss is None else "rlt"
    if kind == "qp" and lam_min < -1e-10 and options.convexify == "refuse":
        kind = "refused"
    return kind, q_matrix, lam_min


def _relaxation_bound(relaxed: _Relaxed, optimal: bool, extra: dict[str, Any],
                      notes: list[str]) -> tuple[float, float | None]:
    """The relaxation's value (objective units) and the bound it certifies: None when the solve was only
    inaccurate (its value still guides the rounding, but certifies nothing) or, for an LP, when the solver gave
    no usable multipliers; else the value less a margin, capped by the weak-duality bound computed here."""
    value = float(relaxed.problem.value) * relaxed.obj_scale
    bound = value - BOUND_MARGIN * abs(value) if optimal else None
    if bound is not None and relaxed.linear is not None:
        certified = dual_bound(relaxed.linear)
        if certified is None:
            notes.append("the LP solver gave no usable multipliers, so no certified bound")
            return value, None
        extra["dual_bound"] = certified * relaxed.obj_scale
        bound = min(bound, certified * relaxed.obj_scale)
    return value, bound

"""The mixed-integer linear form shared by the MIP backends (highs, ortools-mip) and the LP relaxation.

Variables: x[g, o] in {0, 1} for every group option, then y[p, i, j] in [0, 1] for every entry of every
pairwise interaction matrix. Interactions are linearised exactly with the reformulation-linearisation
(RLT) equalities  sum_j y[p, i, j] = x[a, i]  and  sum_i y[p, i, j] = x[b, j]: with binary x the only
solution is y = x_a x_b', so y may stay continuous. Rows are normalised by their limits and the
objective by ``obj_scale`` so that sizes in the 1e9 range and losses in the 1e-6 range sit together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cetopt.problem.compiled import CompiledProblem
from cetopt.problem.model import Minimize


@dataclass(frozen=True)
class LinearModel:
    """min c.z  s.t.  A_ub z <= b_ub,  A_eq z = b_eq,  0 <= z <= 1,  z[:n_x] binary.

    The true objective is ``obj_scale * c.z + obj_offset``.
    """

    c: np.ndarray
    a_ub: sp.csr_matrix
    b_ub: np.ndarray
    ub_names: tuple[str, ...]
    a_eq: sp.csr_matrix
    b_eq: np.ndarray
    n_x: int
    offsets: np.ndarray  # offsets[g] = index of x[g, 0]
    obj_scale: float
    obj_offset: float

    @property
    def n_vars(self) -> int:
        return int(self.c.shape[0])

    def true_objective(self, scaled: float) -> float:
        return self.obj_scale * scaled + self.obj_offset

    def option_from_x(self, values: np.ndarray) -> np.ndarray:
        """One option per group from (near-)binary x values: the largest entry of each group (vectorised)."""
        sizes = np.diff(np.append(self.offsets, self.n_x))
        group = np.repeat(np.arange(len(sizes)), sizes)
        order = np.lexsort((-np.asarray(values[: self.n_x], dtype=np.float64), group))
        return (order[self.offsets] - self.offsets).astype(np.int64)

    def x_from_option(self, choice_index: np.ndarray, pairs: tuple = ()) -> np.ndarray:
        """The 0/1 variable vector of an allocation (y of each interaction = the product x_a x_b)."""
        z = np.zeros(self.n_vars)
        z[self.offsets + np.asarray(choice_index, dtype=np.int64)] = 1.0
        start = self.n_x
        for pair in pairs:
            ka, kb = pair.matrix.shape
            z[start + int(choice_index[pair.a]) * kb + int(choice_index[pair.b])] = 1.0
            start += ka * kb
        return z


def reference_objective(compiled: CompiledProblem) -> float:
    """The greedy answer's objective: the scale the MILP objective is normalised to."""
    from cetopt.solvers.incumbent import greedy_incumbent

    incumbent = greedy_incumbent(compiled)
    return incumbent.objective if incumbent.feasible else compiled.objective_values(incumbent.choice_index)[0]


# The normalised objective puts the reference answer at this value: MIP engines stop at an *absolute*
# gap of about 1e-6 as well as the relative one, so an objective of order 1e-3 would stop them early.
OBJECTIVE_TARGET = 1e3
ROW_TARGET = 1e3


def _equality_rows(compiled: CompiledProblem, sizes: np.ndarray, offsets: np.ndarray, pair_offsets: list[int],
                   n: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """A_eq x = b_eq over the ``n`` variables: one option per group (one-hot rows), and for each interaction pair
    the RLT rows tying its product variables y[i, j] to the two groups' options (row and column sums)."""
    groups = compiled.groups
    n_x = int(sizes.sum())
    # one-hot rows
    eq_rows = [np.repeat(np.arange(len(groups)), sizes)]
    eq_cols = [np.arange(n_x)]
    eq_vals = [np.ones(n_x)]
    b_eq = [np.ones(len(groups))]
    row = len(groups)
    for pair, off in zip(compiled.pairs, pair_offsets):
        ka, kb = pair.matrix.shape
        ids = off + np.arange(ka * kb).reshape(ka, kb)
        for i in range(ka):  # sum_j y[i, j] - x[a, i] = 0
            eq_rows += [np.full(kb + 1, row)]
            eq_cols += [np.append(ids[i], offsets[pair.a] + i)]
            eq_vals += [np.append(np.ones(kb), -1.0)]
            b_eq.append(np.zeros(1))
            row += 1
        for j in range(kb):  # sum_i y[i, j] - x[b, j] = 0
            eq_rows += [np.full(ka + 1, row)]
            eq_cols += [np.append(ids[:, j], offsets[pair.b] + j)]
            eq_vals += [np.append(np.ones(ka), -1.0)]
            b_eq.append(np.zeros(1))
            row += 1
    a_eq = sp.csr_matrix((np.concatenate(eq_vals), (np.concatenate(eq_rows), np.concatenate(eq_cols))),
                         shape=(row, n))
    return a_eq, np.concatenate(b_eq)


def build_linear_model(compiled: CompiledProblem, reference: float | None = None) -> LinearModel:
    """Build the MILP of ``compiled`` (see module docstring); ``reference`` is a typical objective value
    (e.g. :func:`reference_objective`) used to normalise the objective."""
    groups = compiled.groups
    sizes = np.array([g.n_options for g in groups])
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    n_x = int(sizes.sum())
    pair_offsets = []
    n = n_x
    for pair in compiled.pairs:
        pair_offsets.append(n)
        n += pair.matrix.size
    loss = np.zeros(n)
    loss[:n_x] = np.concatenate([g.loss for g in groups])
    for pair, off in zip(compiled.pairs, pair_offsets):
        loss[off:off + pair.matrix.size] = pair.matrix.ravel()
    size = np.zeros(n)
    size[:n_x] = np.concatenate([g.size for g in groups])
    a_eq, b_eq = _equality_rows(compiled, sizes, offsets, pair_offsets, n)
    ub_rows, b_ub, names = [], [], []

    def add_row(coef: np.ndarray, limit: float, name: str) -> None:
        # the limit maps to ROW_TARGET: engines' absolute feasibility tolerances (1e-7 .. 1e-6) are then
        # 1e-10 .. 1e-9 of the budget, inside cetopt's budget slack
        scale = max(abs(limit), float(np.abs(coef).max(initial=0.0)) * 1e-12, 1e-300) / ROW_TARGET
        ub_rows.append(coef / scale)
        b_ub.append(limit / scale)
        names.append(name)

    if compiled.max_size is not None:
        add_row(size, compiled.max_size, "size")
    if compiled.max_bops is not None:
        bops = np.zeros(n)
        bops[:n_x] = np.concatenate([g.bops for g in groups])  # type: ignore[misc]
        add_row(bops, compiled.max_bops, "bops")
    if compiled.max_loss is not None:
        add_row(loss, compiled.max_loss, "loss")
    a_ub = sp.csr_matrix(np.vstack(ub_rows)) if ub_rows else sp.csr_matrix((0, n))
    objective = size if compiled.minimize is Minimize.SIZE else loss
    if reference is not None and np.isfinite(reference) and abs(reference) > 0:
        obj_scale = abs(reference) / OBJECTIVE_TARGET
    else:
        obj_scale = float(np.abs(objective).max(initial=0.0)) or 1.0
    return LinearModel(
        c=objective / obj_scale, a_ub=a_ub, b_ub=np.array(b_ub, dtype=np.float64), ub_names=tuple(names),
        a_eq=a_eq, b_eq=b_eq, n_x=n_x, offsets=offsets, obj_scale=obj_scale, obj_offset=0.0,
    )

"""The solver-facing form of a problem: tie groups folded into super-layers, constraints applied.

Every backend solves the same reduced problem: ``G`` groups, each picking exactly one *option*, where
an option fixes one choice for each member layer of the group (a tie group's members share bits). The
per-layer min/max/fixed-bit constraints are applied here by dropping options, and interaction terms
inside a group are folded into the option losses, so backends only see

    minimise  sum_g loss[g][o_g] + sum_(a,b) pair[a,b][o_a, o_b]     (or sum_g size[g][o_g])
    s.t.      sum_g size[g][o_g] <= max_size,  sum_g bops[g][o_g] <= max_bops,
              sum_g loss[g][o_g] + pairs <= max_loss.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cetopt.errors import ProblemError
from cetopt.problem.evaluate import budget_slack, loss_scale
from cetopt.problem.model import AllocationProblem, Minimize

MAX_TIE_OPTIONS = 4096  # options one tie group may expand to (product of same-bit choices of its members)


@dataclass(frozen=True)
class Group:
    """One decision: a layer, or a tie group of layers that share a bit-width.

    Attributes:
        members: indices into ``problem.layers``.
        options: (k, len(members)) int array; row o gives each member's choice index.
        loss: (k,) predicted loss of each option (intra-group interactions included).
        size: (k,) size in bits of each option.
        bops: (k,) BOPs of each option, or None when no BOPs budget is set.
    """

    members: tuple[int, ...]
    options: np.ndarray
    loss: np.ndarray
    size: np.ndarray
    bops: np.ndarray | None

    @property
    def n_options(self) -> int:
        return int(self.loss.shape[0])


@dataclass(frozen=True)
class PairTerm:
    """Interaction between two groups: ``matrix[i, j]`` is added when group a takes option i and b takes j."""

    a: int
    b: int
    matrix: np.ndarray


@dataclass(frozen=True)
class CompiledProblem:
    """A problem reduced to groups and options (see module docstring).

    Losses (group options, pair terms, ``max_loss``) are divided by ``loss_unit``, the problem's largest
    |loss|, so every backend sees losses of order 1 whatever the model's scale (1e-12 or 1e6): its
    tolerances then mean the same thing on every problem, and rescaling all losses leaves every answer
    unchanged (tests/reliability/test_stress.py). ``objective_values`` and backend bounds are in these
    units; :func:`cetopt.solve` reports the problem's own units.
    """

    problem: AllocationProblem
    groups: tuple[Group, ...]
    pairs: tuple[PairTerm, ...]
    max_size: float | None  # limits include the budget slack of cetopt.problem.evaluate
    max_bops: float | None
    max_loss: float | None  # in loss units (below)
    minimize: Minimize
    loss_unit: float = 1.0  # compiled losses are the problem's divided by this (its largest |loss|)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def has_interactions(self) -> bool:
        return bool(self.pairs)

    @cached_property
    def max_options(self) -> int:
        return max(g.n_options for g in self.groups)

    def resources(self) -> list[tuple[str, float, list[np.ndarray]]]:
        """The resource constraints that are set: (name, limit, per-group coefficient arrays)."""
        out = []
        if self.max_size is not None:
            out.append(("size", self.max_size, [g.size for g in self.groups]))
        if self.max_bops is not None:
            out.append(("bops", self.max_bops, [g.bops for g in self.groups]))  # type: ignore[misc]
        return out

    @cached_property
    def _tables(self) -> dict[str, np.ndarray]:
        """(G, K) tables of loss, size and bops (NaN-padded) and the (G, K) validity mask."""
        counts = np.array([g.n_options for g in self.groups])
        mask = np.arange(self.max_options)[None, :] < counts[:, None]
        tables = {"mask": mask}
        for key in ("loss", "size", "bops"):
            if key == "bops" and self.max_bops is None:
                continue
            table = np.full(mask.shape, np.nan)
            table[mask] = np.concatenate([getattr(g, key) for g in self.groups])
            table.setflags(write=False)
            tables[key] = table
        return tables

    def padded(self, values: str, fill: float) -> np.ndarray:
        """A (G, K) array of ``loss``, ``size`` or ``bops`` per group option, padded with ``fill``."""
        tables = self._tables
        return np.where(tables["mask"], tables[values], fill)

    def objective_values(self, option: np.ndarray) -> tuple[float, float, float, float | None]:
        """(objective, loss, size, bops) of one option index per group."""
        rows = np.arange(self.n_groups)
        option = np.asarray(option)
        tables = self._tables
        loss = float(tables["loss"][rows, option].sum())
        loss += float(sum(p.matrix[option[p.a], option[p.b]] for p in self.pairs))
        size = float(tables["size"][rows, option].sum())
        bops = float(tables["bops"][rows, option].sum()) if self.max_bops is not None else None
        objective = size if self.minimize is Minimize.SIZE else loss
        return objective, loss, size, bops

    def to_choices(self, option: np.ndarray | list[int]) -> dict[str, int]:
        """Map one option index per group back to layer name -> choice index."""
        if len(option) != self.n_groups:
            raise ValueError(f"expected {self.n_groups} option indices, got {len(option)}")
        names = self.problem.layer_names
        out: dict[str, int] = {}
        for group, o in zip(self.groups, option):
            row = group.options[int(o)]
            for member, choice in zip(group.members, row):
                out[names[member]] = int(choice)
        return {name: out[name] for name in names}



def _group_options(problem: AllocationProblem, members: list[int]) -> np.ndarray:
    layers = [problem.layers[m] for m in members]
    allowed = [layer.allowed_choices() for layer in layers]
    if len(members) == 1:
        return np.array(allowed[0], dtype=np.int64).reshape(-1, 1)
    common = set.intersection(*({layer.choices[i].bits for i in idx} for layer, idx in zip(layers, allowed)))
    rows: list[tuple[int, ...]] = []
    for bits in sorted(common):
        per_member = [[i for i in idx if layer.choices[i].bits == bits] for layer, idx in zip(layers, allowed)]
        count = int(np.prod([len(p) for p in per_member]))
        if len(rows) + count > MAX_TIE_OPTIONS:
            raise ProblemError(f"tie group {[layer.name for layer in layers]} expands to more than "
                               f"{MAX_TIE_OPTIONS} options; give tied layers fewer same-bit choices",
                               field="ties")
        rows.extend(itertools.product(*per_member))
    if not rows:
        raise ProblemError(f"tied layers {[layer.name for layer in layers]} share no allowed bit-width; "
                           "align their candidate bits or min/max/fixed bits", field="ties")
    return np.array(rows, dtype=np.int64)


def compile_problem(problem: AllocationProblem) -> CompiledProblem:
    """Reduce ``problem`` to groups and options (tie groups merged, bit constraints applied)."""
    group_of: dict[int, int] = {}
    member_lists: list[list[int]] = []
    for tie in problem.ties:
        member_lists.append([problem.layer_index(name) for name in tie])
    tied = {m for members in member_lists for m in members}
    for i in range(len(problem.layers)):
        if i not in tied:
            member_lists.append([i])
    member_lists.sort(key=min)  # keep layer order, so group g follows the network's depth
    for g, members in enumerate(member_lists):
        for m in members:
            group_of[m] = g
    need_bops = problem.budget.bops is not None
    unit = loss_scale(problem) if loss_scale(problem) > 1e-300 else 1.0  # losses in units of the largest |loss|
    groups = []
    for members in member_lists:
        options = _group_options(problem, members)
        layers = [problem.layers[m] for m in members]
        loss = np.zeros(options.shape[0])
        size = np.zeros(options.shape[0])
        bops = np.zeros(options.shape[0]) if need_bops else None
        for col, layer in enumerate(layers):
            picked = [layer.choices[i] for i in options[:, col]]
            loss += [c.loss / unit for c in picked]
            size += [layer.size_bits(c) for c in picked]
            if bops is not None:
                values = [layer.bops(c, problem.activation_bits) for c in picked]
                if any(v is None for v in values):
                    raise ProblemError(
                        "a BOPs budget is set, so this layer needs 'macs' (or 'bops' on every choice)",
                        field=f"layers[{members[col]}].macs")
                bops += values
        groups.append([members, options, loss, size, bops])
    pair_mats: dict[tuple[int, int], np.ndarray] = {}
    for term in problem.interactions:
        ia, ib = problem.layer_index(term.a), problem.layer_index(term.b)
        ga, gb = group_of[ia], group_of[ib]
        matrix = np.asarray(term.loss, dtype=np.float64) / unit
        pos_a, pos_b = groups[ga][0].index(ia), groups[gb][0].index(ib)
        if ga == gb:
            opts = groups[ga][1]
            groups[ga][2] = groups[ga][2] + matrix[opts[:, pos_a], opts[:, pos_b]]
            continue
        block = matrix[np.ix_(groups[ga][1][:, pos_a], groups[gb][1][:, pos_b])]
        if ga > gb:
            ga, gb, block = gb, ga, block.T
        pair_mats[(ga, gb)] = pair_mats.get((ga, gb), 0.0) + block
    compiled_groups = tuple(
        Group(members=tuple(m), options=o, loss=l, size=s, bops=b) for m, o, l, s, b in groups
    )
    for group in compiled_groups:
        for array in (group.options, group.loss, group.size):
            array.setflags(write=False)
    pairs = tuple(PairTerm(a=a, b=b, matrix=m) for (a, b), m in sorted(pair_mats.items()))
    return CompiledProblem(
        problem=problem, groups=compiled_groups, pairs=pairs, max_size=_with_slack(problem.max_size_bits),
        max_bops=_with_slack(problem.budget.bops),
        max_loss=None if problem.budget.max_loss is None else _with_slack(problem.budget.max_loss / unit),
        minimize=problem.minimize, loss_unit=unit,
    )


def fits(value: float, limit: float | None) -> bool:
    """Whether ``value`` meets a compiled limit (which already includes the budget slack); backends use
    this, never :func:`cetopt.problem.evaluate.within`, so the slack is not applied twice."""
    return limit is None or value <= limit + 1e-12 * abs(limit)


def _with_slack(limit: float | None, scale: float = 1.0) -> float | None:
    return None if limit is None else limit + budget_slack(limit, scale)

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
from typing import Any, Iterator, Sequence

import numpy as np

from cetopt.errors import ProblemError
from cetopt.problem.evaluate import budget_slack, loss_scale
from cetopt.problem.model import AllocationProblem, Minimize
from cetopt.problem.ranges import FlatChoices, check_ranges

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


class GroupColumns(Sequence[Group]):
    """The groups of a problem whose layers are plain columns (no ties, no bit constraints, no BOPs, no
    interactions): group g is layer g with all its choices. Held as the flat arrays; a Group is built when
    one is asked for, so 10^6 groups cost no 10^6 objects (about 0.5 GB at 10^6 layers).

    Attributes:
        loss: (N,) compiled losses (the problem's / loss_unit), read-only.
        size: (N,) sizes in bits, read-only.
        start: (G + 1,) group g's options are entries start[g]:start[g + 1].
    """

    def __init__(self, loss: np.ndarray, size: np.ndarray, start: np.ndarray) -> None:
        self.loss, self.size, self.start = loss, size, start
        self.counts = np.diff(start)
        self._options = {int(k): _readonly(np.arange(k, dtype=np.int64).reshape(-1, 1)) for k in np.unique(self.counts)}

    def __len__(self) -> int:
        return len(self.counts)

    def _group(self, g: int) -> Group:
        lo, hi = int(self.start[g]), int(self.start[g + 1])
        return _group((g,), self._options[hi - lo], self.loss[lo:hi], self.size[lo:hi], None)

    def __getitem__(self, g: int | slice) -> Any:
        if isinstance(g, slice):
            return tuple(self._group(i) for i in range(*g.indices(len(self))))
        n = len(self)
        if not -n <= g < n:
            raise IndexError(g)
        return self._group(g % n)

    def __iter__(self) -> Iterator[Group]:
        return (self._group(g) for g in range(len(self)))

    def column(self, key: str) -> "_PerGroup":
        """A lazy list of each group's ``size`` or ``loss`` array (as CompiledProblem.resources lists them)."""
        return _PerGroup(getattr(self, key), self.start)


class _PerGroup(Sequence[np.ndarray]):
    """Views of one flat array, one per group, made when asked for."""

    def __init__(self, values: np.ndarray, start: np.ndarray) -> None:
        self.values, self.start = values, start

    def __len__(self) -> int:
        return len(self.start) - 1

    def __getitem__(self, g: Any) -> Any:
        if isinstance(g, slice):
            return [self[i] for i in range(*g.indices(len(self)))]
        g = range(len(self))[g]
        return self.values[self.start[g]:self.start[g + 1]]


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


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
    groups: Sequence[Group]  # a tuple, or GroupColumns for plain column layers
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
    def option_counts(self) -> np.ndarray:
        """(G,) number of options per group."""
        if isinstance(self.groups, GroupColumns):
            return self.groups.counts
        return np.fromiter((g.n_options for g in self.groups), np.int64, len(self.groups))

    @cached_property
    def max_options(self) -> int:
        return int(self.option_counts.max())

    def resources(self) -> list[tuple[str, float, Sequence[np.ndarray]]]:
        """The resource constraints that are set: (name, limit, per-group coefficient arrays)."""
        out: list[tuple[str, float, Sequence[np.ndarray]]] = []
        if self.max_size is not None:
            sizes = self.groups.column("size") if isinstance(self.groups, GroupColumns) else \
                [g.size for g in self.groups]
            out.append(("size", self.max_size, sizes))
        if self.max_bops is not None:
            out.append(("bops", self.max_bops, [g.bops for g in self.groups]))  # type: ignore[misc]
        return out

    @cached_property
    def _tables(self) -> dict[str, np.ndarray]:
        """(G, K) tables of loss, size and bops (NaN-padded) and the (G, K) validity mask."""
        counts = self.option_counts
        mask = np.arange(self.max_options)[None, :] < counts[:, None]
        tables = {"mask": mask}
        for key in ("loss", "size", "bops"):
            if key == "bops" and self.max_bops is None:
                continue
            table = np.full(mask.shape, np.nan)
            table[mask] = getattr(self.groups, key) if isinstance(self.groups, GroupColumns) else \
                np.concatenate([getattr(g, key) for g in self.groups])
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
        if isinstance(self.groups, GroupColumns):  # group g is layer g, option k its choice k
            return dict(zip(names, np.asarray(option, dtype=np.int64).tolist()))
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


def _layer_tables(problem: AllocationProblem, index: int, options: np.ndarray, unit: float,
                  need_bops: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(loss / unit, size, bops) of one layer's choices at ``options`` (choice indices)."""
    layer = problem.layers[index]
    picked = [layer.choices[i] for i in options]
    loss = np.array([c.loss for c in picked], dtype=np.float64) / unit
    size = np.array([layer.size_bits(c) for c in picked], dtype=np.float64)
    if not need_bops:
        return loss, size, None
    values = [layer.bops(c, problem.activation_bits) for c in picked]
    if any(v is None for v in values):
        raise ProblemError("a BOPs budget is set, so this layer needs 'macs' (or 'bops' on every choice)",
                           field=f"layers[{index}].macs")
    return loss, size, np.array(values, dtype=np.float64)


def _member_lists(problem: AllocationProblem) -> list[list[int]]:
    """Tie groups and single layers, in layer order (group g follows the network's depth)."""
    member_lists = [[problem.layer_index(name) for name in tie] for tie in problem.ties]
    tied = {m for members in member_lists for m in members}
    member_lists += [[i] for i in range(len(problem.layers)) if i not in tied]
    member_lists.sort(key=min)
    return member_lists


def compile_problem(problem: AllocationProblem) -> CompiledProblem:
    """Reduce ``problem`` to groups and options (tie groups merged, bit constraints applied).

    Raises:
        ProblemError: a number is out of the range backends take (see MAX_MAGNITUDE), naming the field;
            or tied layers share no bit-width.
    """
    flat = FlatChoices.of(problem)
    check_ranges(problem, flat)
    member_lists = _member_lists(problem)
    group_of = {m: g for g, members in enumerate(member_lists) for m in members}
    need_bops = problem.budget.bops is not None
    scale = loss_scale(problem)
    unit = scale if scale > 1e-300 else 1.0  # losses in units of the largest |loss|
    flat_loss = flat.loss / unit
    flat_loss.setflags(write=False)
    if problem.columns is not None and not problem.ties and not need_bops and not problem.interactions:
        groups_view = GroupColumns(flat_loss, flat.size, flat.start)
        return _compiled(problem, groups_view, (), float(np.maximum.reduceat(flat_loss, flat.start[:-1]).sum()),
                         float(np.maximum.reduceat(flat.size, flat.start[:-1]).sum()), 0.0, unit)
    plain = problem.columns is not None  # column layers have no min/max/fixed bits
    all_options: dict[int, np.ndarray] = {}  # one shared read-only (k, 1) arange per option count
    groups = []
    for members in member_lists:
        layer = None if plain else problem.layers[members[0]]
        if len(members) == 1 and not need_bops and (layer is None or (
                layer.min_bits is None and layer.max_bits is None and layer.fixed_bits is None)):
            lo, hi = int(flat.start[members[0]]), int(flat.start[members[0] + 1])  # the fast path: all choices
            options = all_options.get(hi - lo)
            if options is None:
                options = all_options[hi - lo] = np.arange(hi - lo, dtype=np.int64).reshape(-1, 1)
            # read-only views of the flat arrays, not copies (10^5 - 10^6 groups)
            groups.append([members, options, flat_loss[lo:hi], flat.size[lo:hi], None])
            continue
        layer = problem.layers[members[0]]
        if len(members) == 1:
            options = np.array(layer.allowed_choices(), dtype=np.int64).reshape(-1, 1)
        else:
            options = _group_options(problem, members)
        loss = np.zeros(options.shape[0])
        size = np.zeros(options.shape[0])
        bops = np.zeros(options.shape[0]) if need_bops else None
        for col, member in enumerate(members):
            l_col, s_col, b_col = _layer_tables(problem, member, options[:, col], unit, need_bops)
            loss += l_col
            size += s_col
            if bops is not None:
                bops += b_col
        groups.append([members, options, loss, size, bops])
    pairs = _pair_terms(problem, groups, group_of, unit)
    compiled_groups = tuple(_group(tuple(m), o, l, s, b) for m, o, l, s, b in groups)
    top_loss = _sum_of_max([g.loss for g in compiled_groups]) + sum(float(p.matrix.max()) for p in pairs)
    top_size = _sum_of_max([g.size for g in compiled_groups])
    top_bops = sum(float(g.bops.max()) for g in compiled_groups) if need_bops else 0.0  # type: ignore[union-attr]
    return _compiled(problem, compiled_groups, pairs, top_loss, top_size, top_bops, unit)


def _compiled(problem: AllocationProblem, groups: Sequence[Group], pairs: tuple[PairTerm, ...], top_loss: float,
              top_size: float, top_bops: float, unit: float) -> CompiledProblem:
    """The CompiledProblem with its limits (budget slack included, clamped just above the attainable top)."""
    return CompiledProblem(
        problem=problem, groups=groups, pairs=pairs,
        max_size=_clamp(_with_slack(problem.max_size_bits), top_size),
        max_bops=_clamp(_with_slack(problem.budget.bops), top_bops),
        max_loss=None if problem.budget.max_loss is None else
        _clamp(_with_slack(problem.budget.max_loss / unit), top_loss),
        minimize=problem.minimize, loss_unit=unit,
    )


def _group(members: tuple[int, ...], options: np.ndarray, loss: np.ndarray, size: np.ndarray,
           bops: np.ndarray | None) -> Group:
    """A Group over read-only arrays, built without the dataclass' per-field setattr (10^6 groups)."""
    for array in (options, loss, size):
        if array.flags.writeable:
            array.setflags(write=False)
    group = object.__new__(Group)
    group.__dict__.update(members=members, options=options, loss=loss, size=size, bops=bops)
    return group


def _sum_of_max(arrays: list[np.ndarray]) -> float:
    """sum_g max(arrays[g]), one reduction over their concatenation."""
    counts = np.fromiter(map(len, arrays), np.int64, len(arrays))
    starts = np.concatenate(([0], np.cumsum(counts[:-1])))
    return float(np.maximum.reduceat(np.concatenate(arrays), starts).sum())


def _clamp(limit: float | None, top: float) -> float | None:
    """A limit above the largest attainable total ``top`` cannot bind: cap it just above ``top``, so no
    backend sees a number like 1e308 (which overflows integer scaling and row normalisation)."""
    return None if limit is None else min(limit, top + abs(top) + 1.0)


def _pair_terms(problem: AllocationProblem, groups: list[list], group_of: dict[int, int],
                unit: float) -> tuple[PairTerm, ...]:
    """Interaction terms between groups (terms inside one group are folded into its option losses)."""
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
    return tuple(PairTerm(a=a, b=b, matrix=m) for (a, b), m in sorted(pair_mats.items()))


def fits(value: float, limit: float | None) -> bool:
    """Whether ``value`` meets a compiled limit (which already includes the budget slack); backends use
    this, never :func:`cetopt.problem.evaluate.within`, so the slack is not applied twice."""
    return limit is None or value <= limit + 1e-12 * abs(limit)


def _with_slack(limit: float | None, scale: float = 1.0) -> float | None:
    return None if limit is None else limit + budget_slack(limit, scale)

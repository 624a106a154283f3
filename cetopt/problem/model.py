"""The formal allocation problem: layers, their compression choices, budgets and constraints.

A layer picks exactly one *choice*: a compression level (a bit-width, optionally a low-rank rank and a
number of series-expansion terms) with a size in bits and a predicted loss increase. The objective is
the sum of the chosen losses plus optional pairwise interaction terms (cross-layer curvature), and the
budgets bound size, BOPs and total loss. Everything here is plain, frozen data; no solver and no torch.
Sizes are in bits; losses are in the model's loss units (nats for cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cetopt.errors import ProblemError
from cetopt.problem._checks import MAX_BITS, at, check_float, check_int, check_name

from cetopt.problem.budget import FP32_BITS, Budget  # noqa: F401  (part of this module's public names)

if TYPE_CHECKING:
    from cetopt.problem.columns import LayerColumns


class Minimize(StrEnum):
    """What the solver minimises: total predicted loss (under size budgets) or size (under a loss bound)."""

    LOSS = "loss"
    SIZE = "size"


class EdgeKind(StrEnum):
    """How two layers relate in the layer graph."""

    FEEDS = "feeds"  # the output of ``src`` is (part of) the input of ``dst``
    SHARES_INPUT = "shares_input"  # both read the same tensor (e.g. q/k/v projections)
    ADDS_WITH = "adds_with"  # their outputs are summed (a residual add): a natural tie


@dataclass(frozen=True)
class Choice:
    """One compression level of one layer.

    Attributes:
        bits: stored precision of each weight (1..64).
        loss: predicted loss increase when the layer takes this choice (may be negative).
        size_bits: storage in bits; ``None`` means params x bits x terms (or rank x (m+n) x bits x terms).
        bops: bit-operations; ``None`` means macs x bits x activation_bits (needs the layer's MACs).
        rank: low-rank factorisation rank, or ``None`` for the full matrix.
        terms: number of series-expansion basis terms (1 = plain quantisation).
        loss_stderr: standard error of ``loss`` (same unit, >= 0), or ``None`` when unknown; solvers ignore it,
            robust cost models and reports read it.
        rounding: how a plain choice's codes are chosen (a cetopt.quant.rounding name), or ``None`` for the
            problem's (metadata "rounding"); set when one layer offers several roundings (joint allocation).
        group_size: inputs per scale of a plain choice (0 = per channel), or ``None`` for the problem's quantiser.
    """

    bits: int
    loss: float
    size_bits: float | None = None
    bops: float | None = None
    rank: int | None = None
    terms: int = 1
    loss_stderr: float | None = None
    rounding: str | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", check_int(self.bits, "bits", low=1, high=MAX_BITS))
        object.__setattr__(self, "loss", check_float(self.loss, "loss"))
        if self.size_bits is not None:
            object.__setattr__(self, "size_bits", check_float(self.size_bits, "size_bits", low=0.0))
        if self.bops is not None:
            object.__setattr__(self, "bops", check_float(self.bops, "bops", low=0.0))
        if self.rank is not None:
            object.__setattr__(self, "rank", check_int(self.rank, "rank", low=1))
        object.__setattr__(self, "terms", check_int(self.terms, "terms", low=1, high=64))
        if self.loss_stderr is not None:
            object.__setattr__(self, "loss_stderr", check_float(self.loss_stderr, "loss_stderr", low=0.0))
        if self.rounding is not None and (not isinstance(self.rounding, str) or not self.rounding):
            raise ProblemError(f"rounding must be a rounding's name or null, got {self.rounding!r}", field="rounding")
        if self.group_size is not None:
            object.__setattr__(self, "group_size", check_int(self.group_size, "group_size", low=0))

    @property
    def level(self) -> tuple[int, int | None, int, str | None, int | None]:
        """The identity of the choice inside its layer: (bits, rank, terms, rounding, group_size)."""
        return (self.bits, self.rank, self.terms, self.rounding, self.group_size)

    @property
    def label(self) -> str:
        """A short human label: ``4b``, ``r16@8b``, ``3x4b``."""
        text = f"{self.bits}b"
        if self.terms != 1:
            text = f"{self.terms}x{text}"
        if self.rank is not None:
            text = f"r{self.rank}@{text}"
        if self.group_size:
            text = f"{text}/g{self.group_size}"
        if self.rounding is not None:
            text = f"{text}/{self.rounding}"
        return text


@dataclass(frozen=True)
class Layer:
    """A quantisable layer and its candidate choices.

    Attributes:
        name: unique layer name (e.g. the torch module path ``layer1.0.conv1``).
        params: number of weights.
        choices: candidate compression levels, at least one, unique by (bits, rank, terms).
        macs: multiply-accumulates per inference, if known (needed for default BOPs).
        shape: (out_features, in_features) of the weight matrix, needed for low-rank default sizes.
        min_bits, max_bits: allowed bit-width range (inclusive), ``None`` for no bound.
        fixed_bits: force this bit-width (e.g. first/last layer at 8 bits).
    """

    name: str
    params: int
    choices: tuple[Choice, ...]
    macs: int | None = None
    shape: tuple[int, int] | None = None
    min_bits: int | None = None
    max_bits: int | None = None
    fixed_bits: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        object.__setattr__(self, "params", check_int(self.params, "params", low=1))
        if self.macs is not None:
            object.__setattr__(self, "macs", check_int(self.macs, "macs", low=0))
        if self.shape is not None:
            if not isinstance(self.shape, (tuple, list)) or len(self.shape) != 2:
                raise ProblemError("expected [out_features, in_features]", field="shape")
            rows = check_int(self.shape[0], "shape[0]", low=1)
            cols = check_int(self.shape[1], "shape[1]", low=1)
            object.__setattr__(self, "shape", (rows, cols))
        for key in ("min_bits", "max_bits", "fixed_bits"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, check_int(value, key, low=1, high=MAX_BITS))
        choices = tuple(self.choices)
        if not choices:
            raise ProblemError("a layer needs at least one choice, e.g. [{\"bits\": 8, \"loss\": 0.0}]",
                               field="choices")
        seen: dict[tuple[int, int | None, int], int] = {}
        for index, choice in enumerate(choices):
            if not isinstance(choice, Choice):
                raise ProblemError(f"expected a Choice, got {type(choice).__name__}", field=f"choices[{index}]")
            if choice.level in seen:
                raise ProblemError(
                    f"duplicate choice {choice.label} (same as choices[{seen[choice.level]}]); "
                    "remove one or give it a different rank/terms",
                    field=f"choices[{index}]",
                )
            seen[choice.level] = index
            if choice.rank is not None and choice.size_bits is None and self.shape is None:
                raise ProblemError(
                    "a low-rank choice needs size_bits, or the layer needs shape [out, in]",
                    field=f"choices[{index}].size_bits",
                )
            if choice.rank is not None and self.shape is not None and choice.rank > min(self.shape):
                raise ProblemError(f"rank {choice.rank} exceeds min(shape) = {min(self.shape)}",
                                   field=f"choices[{index}].rank")
        object.__setattr__(self, "choices", choices)
        if self.min_bits is not None and self.max_bits is not None and self.min_bits > self.max_bits:
            raise ProblemError(f"min_bits {self.min_bits} > max_bits {self.max_bits}", field="min_bits")
        if not self.allowed_choices():
            raise ProblemError(
                f"no choice satisfies min_bits={self.min_bits}, max_bits={self.max_bits}, "
                f"fixed_bits={self.fixed_bits}; candidate bits are {sorted({c.bits for c in choices})}",
                field="fixed_bits" if self.fixed_bits is not None else "min_bits",
            )

    def is_allowed(self, choice: Choice) -> bool:
        """Whether the per-layer bit constraints admit ``choice``."""
        if self.fixed_bits is not None and choice.bits != self.fixed_bits:
            return False
        if self.min_bits is not None and choice.bits < self.min_bits:
            return False
        return not (self.max_bits is not None and choice.bits > self.max_bits)

    def allowed_choices(self) -> list[int]:
        """Indices of the choices the per-layer constraints admit."""
        return [i for i, c in enumerate(self.choices) if self.is_allowed(c)]

    def size_bits(self, choice: Choice) -> float:
        """Storage of this layer at ``choice``, in bits."""
        if choice.size_bits is not None:
            return choice.size_bits
        if choice.rank is not None:
            assert self.shape is not None  # guaranteed by __post_init__
            return float(choice.rank * (self.shape[0] + self.shape[1]) * choice.bits * choice.terms)
        return float(self.params * choice.bits * choice.terms)

    def bops(self, choice: Choice, activation_bits: int) -> float | None:
        """Bit-operations of this layer at ``choice``, or ``None`` when neither bops nor macs is known."""
        if choice.bops is not None:
            return choice.bops
        if self.macs is None:
            return None
        return default_bops(self.macs, choice.bits, activation_bits, terms=choice.terms, rank=choice.rank,
                            shape=self.shape)


def default_bops(macs: int, bits: int, activation_bits: int, *, terms: int = 1, rank: int | None = None,
                 shape: Sequence[int] | None = None) -> float:
    """Bit-operations of one layer per sample: macs x weight bits x series terms x activation bits (HAWQ-V3's
    count), the MACs scaled to the two thin products of a rank-r factorisation of an m x n weight."""
    scaled = float(macs)
    if rank is not None and shape is not None:  # two thin products instead of one m x n
        scaled *= rank * (shape[0] + shape[1]) / (shape[0] * shape[1])
    return scaled * bits * terms * activation_bits


@dataclass(frozen=True)
class Interaction:
    """A pairwise loss term between two layers: ``loss[i][j]`` is added when ``a`` takes choice i and
    ``b`` takes choice j (cross-layer curvature, e.g. d_a' H_ab d_b with both halves folded in)."""

    a: str
    b: str
    loss: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        check_name(self.a, "layers[0]")
        check_name(self.b, "layers[1]")
        if self.a == self.b:
            raise ProblemError("an interaction needs two different layers; put same-layer terms in the "
                               "choice losses", field="layers")
        if not isinstance(self.loss, (tuple, list)) or not self.loss:
            raise ProblemError("expected a non-empty matrix [[...], ...]", field="loss")
        rows = []
        for i, row in enumerate(self.loss):
            if not isinstance(row, (tuple, list)):
                raise ProblemError("expected a list of numbers", field=f"loss[{i}]")
            rows.append(tuple(check_float(v, f"loss[{i}][{j}]") for j, v in enumerate(row)))
        if len({len(r) for r in rows}) != 1:
            raise ProblemError("rows have different lengths", field="loss")
        object.__setattr__(self, "loss", tuple(rows))


@dataclass(frozen=True)
class Edge:
    """A directed edge of the layer graph."""

    src: str
    dst: str
    kind: EdgeKind = EdgeKind.FEEDS

    def __post_init__(self) -> None:
        check_name(self.src, "from")
        check_name(self.dst, "to")
        try:
            object.__setattr__(self, "kind", EdgeKind(self.kind))
        except ValueError:
            raise ProblemError(f"unknown edge kind {self.kind!r}; use one of "
                               f"{[k.value for k in EdgeKind]}", field="kind") from None


def _frozen_mapping(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class AllocationProblem:
    """A per-layer compression-level allocation problem.

    Attributes:
        name: instance name.
        layers: the layers, each with its choices and per-layer bit constraints.
        budget: the budgets that must all hold.
        minimize: ``loss`` (default) or ``size`` (the lossless-compression dual form).
        ties: groups of layer names that must share a bit-width.
        interactions: pairwise loss terms between layers.
        edges: the layer graph (see :mod:`cetopt.problem.graph`).
        activation_bits: activation precision assumed by default BOPs (macs x w_bits x a_bits).
        metadata: provenance (model, data, seed, curvature settings, versions); free-form JSON.
    """

    name: str
    layers: tuple[Layer, ...]
    budget: Budget = field(default_factory=Budget)
    minimize: Minimize = Minimize.LOSS
    ties: tuple[tuple[str, ...], ...] = ()
    interactions: tuple[Interaction, ...] = ()
    edges: tuple[Edge, ...] = ()
    activation_bits: int = 8
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        from cetopt.problem.columns import LayerColumns

        if isinstance(self.layers, LayerColumns):  # validated when built; kept as arrays (cetopt.problem.columns)
            layers: Sequence[Layer] = self.layers
            index = self.layers.index
        else:
            layers = tuple(self.layers)
            if not layers:
                raise ProblemError("a problem needs at least one layer", field="layers")
            index = {}
            for i, layer in enumerate(layers):
                if not isinstance(layer, Layer):
                    raise ProblemError(f"expected a Layer, got {type(layer).__name__}", field=f"layers[{i}]")
                if layer.name in index:
                    raise ProblemError(f"duplicate layer name {layer.name!r} (also layers[{index[layer.name]}]); "
                                       "layer names must be unique", field=f"layers[{i}].name")
                index[layer.name] = i
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "_index", MappingProxyType(index))
        if not isinstance(self.budget, Budget):
            raise ProblemError(f"expected a Budget, got {type(self.budget).__name__}", field="budget")
        try:
            object.__setattr__(self, "minimize", Minimize(self.minimize))
        except ValueError:
            raise ProblemError(f"expected 'loss' or 'size', got {self.minimize!r}", field="minimize") from None
        object.__setattr__(self, "activation_bits",
                           check_int(self.activation_bits, "activation_bits", low=1, high=MAX_BITS))
        object.__setattr__(self, "ties", self._checked_ties(self.ties))
        interactions = tuple(self.interactions)
        pairs: dict[frozenset[str], int] = {}
        for i, term in enumerate(interactions):
            with at(f"interactions[{i}]"):
                self._check_interaction(term)
                pair = frozenset((term.a, term.b))
                if pair in pairs:  # every backend sees the same problem: none may sum or drop a repeated term
                    raise ProblemError(f"the pair {term.a!r}, {term.b!r} is also interactions[{pairs[pair]}]; give "
                                       "each pair once (add the matrices)", field="layers")
                pairs[pair] = i
        object.__setattr__(self, "interactions", interactions)
        edges = tuple(self.edges)
        for i, edge in enumerate(edges):
            for end, key in ((edge.src, "from"), (edge.dst, "to")):
                if end not in index:
                    raise ProblemError(f"unknown layer {end!r}", field=f"edges[{i}].{key}")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))
        if self.minimize is Minimize.LOSS and self.budget.is_empty():
            raise ProblemError("minimising loss needs a budget, e.g. {\"avg_bits\": 4}; otherwise every "
                               "layer simply takes its most precise choice", field="budget")

    def _checked_ties(self, ties: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
        owner: dict[str, int] = {}
        checked = []
        for g, group in enumerate(ties):
            if isinstance(group, str) or not isinstance(group, (tuple, list)) or len(group) < 2:
                raise ProblemError("a tie group is a list of at least two layer names", field=f"ties[{g}]")
            for j, name in enumerate(group):
                if not isinstance(name, str):
                    raise ProblemError(f"expected a layer name, got {type(name).__name__}", field=f"ties[{g}][{j}]")
                if name not in self._index:  # type: ignore[attr-defined]
                    raise ProblemError(f"unknown layer {name!r}", field=f"ties[{g}][{j}]")
                if name in owner:
                    raise ProblemError(f"layer {name!r} is already in ties[{owner[name]}]; merge the two groups",
                                       field=f"ties[{g}][{j}]")
                owner[name] = g
            checked.append(tuple(group))
        return tuple(checked)

    def _check_interaction(self, term: Interaction) -> None:
        if not isinstance(term, Interaction):
            raise ProblemError(f"expected an Interaction, got {type(term).__name__}")
        for end, key in ((term.a, "layers[0]"), (term.b, "layers[1]")):
            if end not in self._index:  # type: ignore[attr-defined]
                raise ProblemError(f"unknown layer {end!r}", field=key)
        if term.a == term.b:
            raise ProblemError(f"a layer cannot interact with itself ({term.a!r}); its own loss is in its choices",
                               field="layers")
        rows, cols = len(term.loss), len(term.loss[0])
        want = (len(self.layer(term.a).choices), len(self.layer(term.b).choices))
        if (rows, cols) != want:
            raise ProblemError(f"matrix is {rows}x{cols} but the layers have {want[0]}x{want[1]} choices",
                               field="loss")

    # ----------------------------------------------------------------- lookups
    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        try:
            return self.layers[self._index[name]]  # type: ignore[attr-defined]
        except KeyError:
            raise ProblemError(f"unknown layer {name!r}", field="layer") from None

    def layer_index(self, name: str) -> int:
        return self._index[name]  # type: ignore[attr-defined,no-any-return]

    @property
    def columns(self) -> "LayerColumns | None":
        """The layers as arrays when the problem was built from columns (cetopt.problem.columns), else None."""
        from cetopt.problem.columns import LayerColumns

        return self.layers if isinstance(self.layers, LayerColumns) else None

    @property
    def layer_names(self) -> list[str]:
        columns = self.columns
        return list(columns.names) if columns is not None else [layer.name for layer in self.layers]

    @property
    def total_params(self) -> int:
        columns = self.columns
        if columns is not None:
            return int(columns.params.sum())
        return sum(layer.params for layer in self.layers)

    @property
    def max_size_bits(self) -> float | None:
        """The size limit in bits implied by the budget, or None."""
        return self.budget.max_size_bits(self.total_params)

    @property
    def fp32_size_bits(self) -> float:
        return float(FP32_BITS * self.total_params)

    def with_budget(self, budget: Budget | None = None, **changes: float | None) -> "AllocationProblem":
        """A copy with a new budget (or some budget fields changed)."""
        new_budget = budget if budget is not None else self.budget.replace(**changes)
        return AllocationProblem(
            name=self.name, layers=self.layers, budget=new_budget, minimize=self.minimize, ties=self.ties,
            interactions=self.interactions, edges=self.edges, activation_bits=self.activation_bits,
            metadata=dict(self.metadata),
        )

    def with_changes(self, **changes: Any) -> "AllocationProblem":
        """A copy with any fields changed (validated again)."""
        values = {k: getattr(self, k) for k in ("name", "layers", "budget", "minimize", "ties",
                                                 "interactions", "edges", "activation_bits")}
        values["metadata"] = dict(self.metadata)
        values.update(changes)
        return AllocationProblem(**values)

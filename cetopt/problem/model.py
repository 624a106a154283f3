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
from cetopt.problem.layer import Choice, Layer, default_bops  # noqa: F401  (part of this module's public names)

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

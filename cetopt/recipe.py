"""The recipe of a problem: every choice a build makes that is not data (the model, its calibration batches and the
curvature estimates are data). One frozen value, torch- and numpy-free so the command line reads its defaults
and help texts from it before anything heavy loads.

A problem records its recipe in ``metadata["recipe"]`` (:meth:`Recipe.to_dict`), so
``build(spec, Recipe.from_metadata(problem.metadata))`` rebuilds it. A recipe holds no budget: a build prices every
candidate, and the front end (``cetopt extract/plan/demo``, the bench, the rerank pool) attaches the budget once.

Adding a recipe field: the field here (with its ``to_dict``/``from_dict`` entry), its use in
``cetopt/builders/second_order.py``, and, when users choose it, its flag in ``cetopt/cli/recipe_flags.py``
(docs/architecture.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from cetopt.errors import ProblemError
from cetopt.quant.spec import QuantizerSpec

log = logging.getLogger(__name__)

# the front ends' size budget when none is given (cetopt extract, cetopt demo, cetopt.workflow.build_for), in average
# bits per quantised weight; `cetopt plan` ships a plan and defaults to PLAN_AVG_BITS. A budget is not part of a
# recipe: a problem is built without one and a front end attaches it.
DEFAULT_AVG_BITS = 3.0
PLAN_AVG_BITS = 4.0

LLC_RADII = ("directional", "lambda-max")


@dataclass(frozen=True)
class Levels:
    """The compression levels a layer may take (one Choice each), beyond plain bit-widths.

    Attributes:
        bits: plain quantisation at these bit-widths (rounded as the recipe's ``rounding`` says).
        rank_energies: low-rank: the smallest ranks keeping these fractions of ||W||_F^2 (truncated SVD).
        rank_grid: low-rank: ranks as fractions of min(m, n) (e.g. 0.25 = a quarter of full rank).
        rank_bits: storage bits of the low-rank factors (32 = floating point), one choice per rank and value.
        series_bits, series_terms: series expansion: every (bits per term, number of terms) pair.
    """

    bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    rank_energies: tuple[float, ...] = ()
    rank_grid: tuple[float, ...] = ()
    rank_bits: tuple[int, ...] = (32,)
    series_bits: tuple[int, ...] = ()
    series_terms: tuple[int, ...] = field(default=(2,))

    def to_dict(self) -> dict[str, list]:
        return {k: list(getattr(self, k)) for k in ("bits", "rank_energies", "rank_grid", "rank_bits", "series_bits",
                                                     "series_terms")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Levels":
        """The levels of :meth:`to_dict`."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ProblemError(f"unknown level fields {sorted(unknown)}", field="recipe.levels")
        return cls(**{k: tuple(v) for k, v in data.items()})


@dataclass(frozen=True)
class Recipe:
    """How a problem is built from a model: candidates, their prices, the constraints and terms offered.

    Attributes:
        cost_model: a registered cost model (cetopt.costmodels.registry: cet-upper, cet, hawq-v3, llc, ...).
        bits: candidate bit-widths per layer (plain quantisation).
        levels: compression levels beyond plain bit-widths (low-rank, series); None: ``bits`` alone. Overrides
            ``bits`` when given.
        quantizer: the candidates' grid (clipping, per-channel scales, symmetric levels).
        rounding: a registered rounding (cetopt.quant.rounding), or several: each (bits, rounding) is then a
            candidate of its own (joint allocation).
        group_sizes: scale layouts offered as candidates (0 = per channel, g = a scale per g inputs), each priced
            with its packed size; None: the quantiser's layout alone.
        interactions: add exact cross-layer terms d_a' H_ab d_b of adjacent layers.
        layer_eps: keep only candidates inside CET's error subspace E_l(eps) (the best one where none is); None: all.
        max_loss: a lossless cost model's (LLC) bound on the total predicted change when no budget is attached.
        llc_radius: "directional" (each candidate's own curvature d'Hd/|d|^2) or "lambda-max" (the conservative ball).
        tie_residuals: layers whose outputs are summed (traced with torch.fx) share a bit-width.
        activation_bits: the activation width the problem's BOPs assume (macs x weight bits x this).
        objective: what the problem minimises (cetopt.modelspec.OBJECTIVES: "task", "fidelity"); None: the spec's
            own. Front ends load the model with it (load_model_spec(target, objective=...)).
    """

    cost_model: str = "cet-upper"
    bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    levels: Levels | None = None
    quantizer: QuantizerSpec = QuantizerSpec(clip="mse")
    rounding: str | tuple[str, ...] = "nearest"
    group_sizes: tuple[int, ...] | None = None
    interactions: bool = False
    layer_eps: float | None = None
    max_loss: float = 0.0
    llc_radius: str = "directional"
    tie_residuals: bool = True
    activation_bits: int = 8
    objective: str | None = None

    def __post_init__(self) -> None:
        from cetopt.modelspec import OBJECTIVES
        from cetopt.quant.rounding.registry import ROUNDINGS

        if not isinstance(self.cost_model, str) or not self.cost_model:
            raise ProblemError(f"expected a cost model name, got {self.cost_model!r}", field="recipe.cost_model")
        object.__setattr__(self, "bits", _ints(self.bits, "recipe.bits", low=1, high=16))
        if not self.bits and self.levels is None:
            raise ProblemError("a recipe needs candidate bit-widths (or levels)", field="recipe.bits")
        names = (self.rounding,) if isinstance(self.rounding, str) else tuple(self.rounding)
        unknown = [n for n in names if n not in ROUNDINGS]
        if not names or unknown:
            raise ProblemError(f"unknown rounding {unknown[0] if unknown else names!r}; use one or more of "
                               f"{ROUNDINGS}", field="recipe.rounding")
        object.__setattr__(self, "rounding", names[0] if len(names) == 1 else names)
        if self.group_sizes is not None:
            object.__setattr__(self, "group_sizes", _ints(self.group_sizes, "recipe.group_sizes", low=0))
        if self.llc_radius not in LLC_RADII:
            raise ProblemError(f"llc_radius must be one of {LLC_RADII}, got {self.llc_radius!r}",
                               field="recipe.llc_radius")
        if self.objective not in (None, *OBJECTIVES):
            raise ProblemError(f"unknown objective {self.objective!r}; use one of {OBJECTIVES} or none (the spec's "
                               "own)", field="recipe.objective")
        object.__setattr__(self, "activation_bits", _ints((self.activation_bits,), "recipe.activation_bits",
                                                          low=1, high=32)[0])
        if not isinstance(self.quantizer, QuantizerSpec):
            raise ProblemError(f"expected a QuantizerSpec, got {type(self.quantizer).__name__}",
                               field="recipe.quantizer")
        if self.levels is not None and self.group_sizes is not None:
            raise ProblemError("group sizes as candidates apply to plain bit-widths, not to levels",
                               field="recipe.group_sizes")

    @property
    def roundings(self) -> tuple[str, ...]:
        """The rounding(s) as a tuple."""
        return (self.rounding,) if isinstance(self.rounding, str) else tuple(self.rounding)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (checked as a new recipe)."""
        return replace(self, **changes)

    def priced_by(self, cost_model: str) -> "Recipe":
        """The same candidates (bits or levels, grid, rounding, group sizes, ties, objective) priced by another cost
        model alone: no cross-layer terms and no error-subspace filter, which belong to this recipe's own pricing.
        What a baseline or a rerank pool member is built with, so its plan is on the compared problem's choices."""
        return replace(self, cost_model=cost_model, interactions=False, layer_eps=None)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON values (what ``metadata["recipe"]`` holds)."""
        return {"cost_model": self.cost_model, "bits": list(self.bits),
                "levels": None if self.levels is None else self.levels.to_dict(),
                "quantizer": self.quantizer.to_dict(),
                "rounding": self.rounding if isinstance(self.rounding, str) else list(self.rounding),
                "group_sizes": None if self.group_sizes is None else list(self.group_sizes),
                "interactions": self.interactions, "layer_eps": self.layer_eps, "max_loss": self.max_loss,
                "llc_radius": self.llc_radius, "tie_residuals": self.tie_residuals,
                "activation_bits": self.activation_bits, "objective": self.objective}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """The recipe of :meth:`to_dict` (fields left out take the default recipe's values).

        Raises:
            ProblemError(field="recipe.<name>"): an unknown field or a bad value.
        """
        if not isinstance(data, Mapping):
            raise ProblemError(f"expected an object, got {type(data).__name__}", field="recipe")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProblemError(f"unknown recipe field(s) {unknown}; known: {sorted(known)}", field="recipe")
        values = dict(data)
        if values.get("levels") is not None:
            values["levels"] = Levels.from_dict(values["levels"])
        if "quantizer" in values:
            values["quantizer"] = _quantizer(values["quantizer"])
        for key in ("bits", "group_sizes"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if isinstance(values.get("rounding"), list):
            values["rounding"] = tuple(values["rounding"])
        return cls(**values)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "Recipe":
        """The recipe a problem was built with: its ``metadata["recipe"]``, or, for a problem written before
        problems recorded one, the recipe read from its older provenance keys (method, bits, levels, quantizer,
        rounding, group_sizes, interactions, layer_eps, llc_radius; logged at INFO).

        Raises:
            ProblemError(field="metadata.recipe"): the metadata records neither (e.g. a published problem).
        """
        if "recipe" in metadata:
            return cls.from_dict(metadata["recipe"])
        if "method" not in metadata or "bits" not in metadata:
            raise ProblemError("the problem records no recipe (metadata.recipe) and no build provenance (method, "
                               "bits): it was not built by cetopt from a model; re-extract it with cetopt extract",
                               field="metadata.recipe")
        log.info("the problem records no recipe (built before problems recorded one): reading it from its provenance "
                 "(method %s, rounding %s, interactions %s)", metadata["method"], metadata.get("rounding", "nearest"),
                 metadata.get("interactions", 0))
        legacy = {"cost_model": metadata["method"], "bits": metadata["bits"], "levels": metadata.get("levels"),
                  # files written before the quantiser was recorded used the plain max|w| grid
                  "quantizer": metadata.get("quantizer", QuantizerSpec().to_dict()),
                  "rounding": metadata.get("rounding", "nearest"), "group_sizes": metadata.get("group_sizes"),
                  "interactions": bool(metadata.get("interactions", 0)), "layer_eps": metadata.get("layer_eps"),
                  "llc_radius": metadata.get("llc_radius", "directional")}
        return cls.from_dict(legacy)


def _ints(values: Any, name: str, *, low: int, high: int | None = None) -> tuple[int, ...]:
    """``values`` as a tuple of integers in [low, high] (bools refused)."""
    try:
        out = tuple(values)
    except TypeError:
        raise ProblemError(f"expected a list of integers, got {values!r}", field=name) from None
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise ProblemError(f"expected integers {bound}, got {v!r}", field=name)
    return out


def _quantizer(data: Any) -> QuantizerSpec:
    if isinstance(data, QuantizerSpec):
        return data
    if not isinstance(data, Mapping):
        raise ProblemError(f"expected an object, got {type(data).__name__}", field="recipe.quantizer")
    unknown = sorted(set(data) - {f.name for f in fields(QuantizerSpec)})
    if unknown:
        raise ProblemError(f"unknown quantizer field(s) {unknown}", field="recipe.quantizer")
    return QuantizerSpec(**data)


# The default: cet-upper on the MSE-clipped grid, chosen by measurement on the development models and frozen in
# docs/results/recipe.json (cetopt.results.recipe; why: docs/decisions.md). cet-upper is the only cost model that
# passed every cell measured: it ties HAWQ-V3 on the six zoo cells over 3 seeds (benchmarks/results/
# cost_models_mseclip.md) and is at least as good as HAWQ-V3 and better than uniform on MobileNetV2 and MiniLM at
# 3/4/5 bits (benchmarks/results/cost_models_pretrained_mseclip.md). On the plain max|w| grid every cost model loses
# almost all of MobileNetV2's top-1 agreement at 3 bits; on the MSE-clipped grid the default keeps much of it.
DEFAULT_RECIPE = Recipe()

RECIPES: dict[str, Recipe] = {
    "default": DEFAULT_RECIPE,
    # the theory's (docs/cet-method, `cetopt prove`): CET's second-order model with the gradient term, on the plain
    # max|w| grid whose round-to-nearest errors the checks measure
    "cet": Recipe(cost_model="cet", quantizer=QuantizerSpec()),
    # HAWQ-V3 (Yao et al. 2021): Tr(H)/n |Q_b(W) - W|^2 per layer, INT4/INT8 candidates on the plain per-channel
    # symmetric grid
    "hawq-v3": Recipe(cost_model="hawq-v3", bits=(4, 8), quantizer=QuantizerSpec()),
}


def recipe_names() -> tuple[str, ...]:
    """The named recipes, the default first."""
    return tuple(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The named recipe ``name``.

    Raises:
        ProblemError(field="recipe"): an unknown name (the message lists the known ones).
    """
    if name not in RECIPES:
        raise ProblemError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}", field="--recipe")
    return RECIPES[name]


__all__ = ["DEFAULT_AVG_BITS", "DEFAULT_RECIPE", "PLAN_AVG_BITS", "Levels", "RECIPES", "Recipe", "get_recipe",
           "recipe_names"]

"""Run a recipe on a model at a budget: the one call the demo, the bench, the proofs and the notebooks stand on.

``build_for(spec, recipe, budget=...)`` builds the priced problem of ``spec`` under a :class:`~cetopt.recipe.Recipe`
(:func:`cetopt.builders.second_order.build`, which knows no budget) and attaches the budget once.
:mod:`cetopt.measure` applies and measures plans; :mod:`cetopt.baselines` holds the baseline allocations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cetopt.builders.provenance import objective_name, problem_name  # noqa: F401  (imported from here)
from cetopt.errors import ProblemError
from cetopt.modelspec import ModelSpec
from cetopt.problem.model import Budget
from cetopt.recipe import DEFAULT_AVG_BITS, DEFAULT_RECIPE, Recipe

if TYPE_CHECKING:
    from cetopt.builders.second_order import BuiltProblem

# the default recipe's fields under their older names (the recipe is the one place they are defined)
DEFAULT_BITS = DEFAULT_RECIPE.bits
DEFAULT_QUANTIZER = DEFAULT_RECIPE.quantizer
DEFAULT_ROUNDING = DEFAULT_RECIPE.rounding

# build options that are recipe fields (``method`` is the recipe's cost_model); None leaves the recipe's value
RECIPE_OPTIONS = {"method": "cost_model", "bits": "bits", "levels": "levels", "quantizer": "quantizer",
                  "rounding": "rounding", "group_sizes": "group_sizes", "interactions": "interactions",
                  "layer_eps": "layer_eps", "max_loss": "max_loss", "llc_radius": "llc_radius",
                  "tie_residuals": "tie_residuals"}
# build options that are not choices but resources and provenance (cetopt.builders.second_order.build)
BUILD_OPTIONS = ("settings", "curvature", "cache_dir", "forms_cache", "metadata")


def recipe_with(recipe: Recipe | None = None, **options: Any) -> Recipe:
    """``recipe`` (default: the default recipe) with the given recipe fields changed, by their build-option names
    (:data:`RECIPE_OPTIONS`; ``method`` = cost_model); a None value leaves the field as it is.

    Raises:
        ProblemError(field=name): an option that is not a recipe field.
    """
    unknown = sorted(set(options) - set(RECIPE_OPTIONS))
    if unknown:
        raise ProblemError(f"unknown recipe option(s) {unknown}; recipe fields: {sorted(RECIPE_OPTIONS)}",
                           field=unknown[0])
    changes = {RECIPE_OPTIONS[k]: v for k, v in options.items() if v is not None}
    base = recipe or DEFAULT_RECIPE
    return base.replace(**changes) if changes else base


def build_for(spec: ModelSpec, recipe: Recipe | None = None, *, budget: Budget | None = None,
              target: str | None = None, **options: Any) -> "BuiltProblem":
    """The allocation problem of ``spec`` under ``recipe`` at ``budget``, and its candidates' weights.

    Args:
        recipe: the build's choices (default :data:`cetopt.recipe.DEFAULT_RECIPE`).
        budget: default :data:`cetopt.recipe.DEFAULT_AVG_BITS` average bits (a lossless cost model, LLC: its own
            form, size minimised subject to a predicted change <= the recipe's max_loss).
        target: how the model was named (zoo name, module:function, file.py:function), recorded as metadata
            "model_target" so bench, apply and evaluate can load the model again.
        options: recipe fields changed for this build, by their option names (method, bits, rounding, quantizer,
            group_sizes, interactions, levels, layer_eps, max_loss, llc_radius, tie_residuals: :func:`recipe_with`),
            and build resources (settings, curvature, cache_dir, forms_cache, metadata).
    """
    from cetopt.builders.second_order import build

    resources = {k: options.pop(k) for k in BUILD_OPTIONS if k in options}
    priced = build(spec, recipe_with(recipe, **options), target=target, **resources)
    if budget is None and not priced.lossless:
        budget = Budget(avg_bits=DEFAULT_AVG_BITS)
    return priced.with_budget(budget)

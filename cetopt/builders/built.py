"""What a build returns: the priced problem before its budget (:class:`PricedProblem`) and, once a front end has
attached the budget, the allocation problem with each choice's compressed weight (:class:`BuiltProblem`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from cetopt.problem.model import AllocationProblem, Budget, Edge, Interaction, Layer
from cetopt.recipe import Recipe

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cetopt.curvature.result import CurvatureResult


@dataclass(frozen=True)
class BuiltProblem:
    """An allocation problem and what it was built from.

    Attributes:
        problem: the problem (choices in the order of ``weights``).
        weights: layer -> the compressed weight of each of its choices.
        curvature: the curvature result used (None when only exact quadratic forms were needed).
    """

    problem: AllocationProblem
    weights: Mapping[str, tuple["torch.Tensor", ...]]
    curvature: "CurvatureResult | None" = None

    def compressed_weights(self, bits: Mapping[str, int]) -> dict[str, "torch.Tensor"]:
        """Layer -> compressed weight of the choice with the planned bit-width (plain quantisation)."""
        from cetopt.problem.evaluate import choices_from_bits

        return self.weights_for_choices(choices_from_bits(self.problem, bits))

    def weights_for_choices(self, choices: Mapping[str, int]) -> dict[str, "torch.Tensor"]:
        """Layer -> compressed weight of a choice index (any level: bits, rank, terms)."""
        return {layer.name: self.weights[layer.name][choices[layer.name]] for layer in self.problem.layers}

    def apply(self, model: "nn.Module", bits: Mapping[str, int]) -> "nn.Module":
        """A copy of ``model`` with each layer's weight replaced by its planned compressed weight."""
        return replace_weights(model, self.compressed_weights(bits))


def replace_weights(model: "nn.Module", weights: Mapping[str, "torch.Tensor"]) -> "nn.Module":
    """A copy of ``model`` whose named layers' weights are ``weights`` (layer name -> tensor)."""
    out = copy.deepcopy(model)
    from cetopt.curvature.layers import layer_weight

    for name, weight in weights.items():
        target = layer_weight(out, name)  # a module's weight or a bare Parameter; ProblemError when absent
        target.data.copy_(weight.to(device=target.device, dtype=target.dtype))
    return out


@dataclass(frozen=True)
class PricedProblem:
    """A problem before its budget: every layer's priced choices, the layer graph, the interaction terms and ties,
    the provenance (``metadata``, with the recipe under "recipe"), and each choice's compressed weight. A front end
    attaches the budget once: ``priced.with_budget(Budget(avg_bits=3))``.

    Attributes:
        name: the problem's name.
        layers: the layers with their kept, priced choices.
        edges, interactions, ties: the layer graph, the cross-layer terms, the groups sharing a bit-width.
        metadata: provenance (recipe, cost model, curvature settings, model, fingerprints, coverage, ...).
        weights: layer -> the compressed weight of each kept choice (in ``layers``' order).
        curvature: the curvature result used (None when only exact quadratic forms were needed).
        lossless: the cost model's form (LLC): without a budget, size is minimised under the recipe's max_loss.
    """

    name: str
    layers: tuple[Layer, ...]
    edges: tuple[Edge, ...]
    interactions: tuple[Interaction, ...]
    ties: tuple[tuple[str, ...], ...]
    metadata: Mapping[str, Any]
    weights: Mapping[str, tuple["torch.Tensor", ...]]
    curvature: "CurvatureResult | None" = None
    lossless: bool = False

    @property
    def recipe(self) -> Recipe:
        """The recipe this problem was built with."""
        return Recipe.from_metadata(self.metadata)

    @property
    def total_params(self) -> int:
        """Weights of the planned layers."""
        return sum(layer.params for layer in self.layers)

    def with_budget(self, budget: Budget | None = None) -> BuiltProblem:
        """The allocation problem at ``budget``: minimise the predicted loss under a size/BOPs budget, or the size
        under a bound on the predicted loss alone; None only for a lossless cost model (LLC: size minimised subject
        to a predicted change <= the recipe's max_loss).

        Raises:
            ProblemError(field="budget"): no budget for a cost model that needs one.
        """
        from cetopt.builders.assemble import problem_form

        recipe = self.recipe
        budget, minimize = problem_form(budget, self.lossless, recipe.max_loss, self.total_params)
        problem = AllocationProblem(name=self.name, layers=self.layers, budget=budget, edges=self.edges,
                                    interactions=self.interactions, minimize=minimize, ties=self.ties,
                                    activation_bits=recipe.activation_bits, metadata=self.metadata)
        return BuiltProblem(problem=problem, weights=self.weights, curvature=self.curvature)

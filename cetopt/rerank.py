"""The solver and the measurement in one loop: the k best plans of a problem (Lawler's partitioning over any exact
backend) and, beside them, the plans other cost models make at the same budget (the pool), each measured on
held-out validation data, and the best measured one returned with both objectives.

Why a pool: where a cost model's errors do not add up across layers (MobileNetV2, check 6 of ``cetopt prove``),
its k best plans differ in a layer or two and share its mistake; a plan from another cost model is a genuinely
different guess, and the measurement picks the better one. Which pool is the default, and what re-ranking the k
best alone does, was measured: benchmarks/results/selection.md (benchmarks/selection.py).

k-best (Lawler 1972, the scheme of Murty's k-best assignments): after the i-th best plan x of a subproblem S, S
minus {x} is split into disjoint subproblems S_j = {layers 1..j-1 take x's choices, layer j avoids x's choice},
each solved exactly; a heap returns the next best. With an exact backend (dp, the MIPs) the list is the true k
best by the problem's objective, in order (ties in any order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from cetopt.errors import ProblemError
from cetopt.problem.model import AllocationProblem
from cetopt.search.base import SearchRequest  # noqa: F401  (re-exported: cetopt plan builds one)
from cetopt.solvers.k_best import RankedPlan, k_best, restrict, solve_or_none  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import torch

    from cetopt.builders.second_order import BuiltProblem
    from cetopt.measure import Measurer
    from cetopt.modelspec import ModelSpec
    from cetopt.problem.model import Budget
    from cetopt.recipe import Recipe
    from cetopt.search.base import SearchBudget, SearchResult

# the cost models whose plans join the default's in a measured selection (``cetopt plan``, ``cetopt demo``), chosen
# by benchmarks/selection.py (results/selection.md). Adding cet-nograd won one more zoo cell, but its plan needs a
# second pass of quadratic forms (167 s on MobileNetV2, about as long as the default's own build), while HAWQ-V3's
# plan is the baseline that the demo and bench compute anyway
DEFAULT_POOL: tuple[str, ...] = ("hawq-v3",)


@dataclass(frozen=True)
class RerankResult:
    """The k best plans (solver order) with their measurements; ``best`` is the best measured one."""

    plans: tuple[RankedPlan, ...]
    best: RankedPlan

    @property
    def solver_best(self) -> RankedPlan:
        return self.plans[0]


def pool_plan(problem: AllocationProblem, source: str, bits: Mapping[str, int]) -> RankedPlan:
    """A plan made elsewhere (another cost model's, at the same budget) as a candidate of ``problem``.

    Raises:
        ProblemError(field="pool"): ``bits`` is not a plan of ``problem``'s layers, or breaks its budget.
    """
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    try:
        choices = choices_from_bits(problem, bits)
    except ProblemError as err:
        raise ProblemError(f"the {source} plan is not a plan of {problem.name}: {err}", field="pool") from None
    score = evaluate(problem, choices)
    if not score.feasible:
        raise ProblemError(f"the {source} plan breaks {problem.name}'s constraints ({'; '.join(score.violations)}); "
                           "a pool plan must be solved at the same budget", field="pool")
    return RankedPlan(rank=None, choices=choices, bits=dict(bits), objective=float(score.objective),
                      predicted_loss=float(score.loss), size_bits=float(score.size_bits), source=source)


def rerank(built: "BuiltProblem", measure: Callable[[Mapping[str, "torch.Tensor"]], float | None], k: int,
           solver: str = "dp", *, pool: Mapping[str, Mapping[str, int]] | None = None) -> RerankResult:
    """The k best plans of ``built.problem`` and the ``pool`` plans (name -> bits, e.g. HAWQ-V3's plan at the same
    budget), each measured by ``measure(compressed weights)`` (lower is better, e.g.
    :meth:`cetopt.measure.Measurer.validation_dloss`); the best measured plan is returned with both objectives.
    A pool plan equal to one of the k best is measured once, under the k-best entry. Ties in the measurement go
    to the k best, in solver order.

    Raises:
        ProblemError(field="problem"): no feasible plan; ProblemError(field="validation"): ``measure`` gave None;
        ProblemError(field="pool"): a pool plan that is not a feasible plan of the problem.
    """
    source = str(built.problem.metadata.get("method", ""))
    plans = [dataclasses.replace(p, source=source) for p in k_best(built.problem, k, solver)]
    if not plans:
        raise ProblemError("no feasible plan to re-rank; loosen the budget", field="problem")
    index = {tuple(sorted(p.choices.items())): i for i, p in enumerate(plans)}
    for name, bits in (pool or {}).items():
        candidate = pool_plan(built.problem, name, bits)
        key = tuple(sorted(candidate.choices.items()))
        if key in index:
            twin = plans[index[key]]
            plans[index[key]] = dataclasses.replace(twin, same_as=twin.same_as + (name,))
        else:
            index[key] = len(plans)
            plans.append(candidate)
    measured = []
    for plan in plans:
        value = measure(built.weights_for_choices(plan.choices))
        if value is None:
            raise ProblemError("re-ranking needs held-out validation batches: give ModelSpec.validation",
                               field="validation")
        measured.append(dataclasses.replace(plan, measured=float(value)))
    best = min(measured, key=lambda p: (p.measured, len(measured) if p.rank is None else p.rank))
    return RerankResult(plans=tuple(measured), best=best)


def selection_measure(measurer: "Measurer") -> tuple[Callable[[Mapping[str, "torch.Tensor"]], float], str]:
    """(measure, split): the validation loss change when the model has validation batches, else the calibration
    loss change (measured on the whole plan, so not the costs' additive prediction, but on the data the costs
    were estimated from: say so when reporting)."""
    if measurer.spec.validation:
        return measurer.validation_dloss, "validation"  # type: ignore[return-value]
    return measurer.calibration_dloss, "calibration"


@dataclass(frozen=True)
class Selection:
    """A measured selection: the re-ranked plans, which split measured them, the pool members' problems' build
    seconds (what the pool cost), and the pool members left out because they had no feasible plan.

    Attributes:
        backends: the backends whose plans joined the pool (as ``METHOD/BACKEND``); backend_seconds: their solves.
        search: the measured search's result when one ran (its plan joined the pool as ``search:STRATEGY``).
        surrogate_optimum, surrogate_bound: the exact solver's optimal predicted value of the problem and its
            certified lower bound, reported beside the measured winner.
        seconds: the whole selection's wall time.
    """

    result: RerankResult
    split: str
    pool_seconds: float
    left_out: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    backend_seconds: float = 0.0
    search: "SearchResult | None" = None
    surrogate_optimum: float | None = None
    surrogate_bound: float | None = None
    seconds: float = 0.0


def pool_bits(spec: "ModelSpec", problem: AllocationProblem, pool: Sequence[str], solver: str = "dp",
              ) -> dict[str, Mapping[str, int]]:
    """Each pool cost model's plan of ``spec`` at ``problem``'s budget, on ``problem``'s candidates: its recipe
    (cetopt.recipe.Recipe.from_metadata) priced by the pool member (:meth:`Recipe.priced_by`) (name -> bits). A member
    with no feasible plan is left out (logged; :attr:`Selection.left_out` names it).

    Raises:
        ProblemError(field="pool"): an unknown cost model.
    """
    import logging

    from cetopt.builders.second_order import build
    from cetopt.costmodels.registry import cost_model_names
    from cetopt.recipe import Recipe
    from cetopt.solvers.api import solve

    unknown = [name for name in pool if name not in cost_model_names()]
    if unknown:
        raise ProblemError(f"unknown cost model(s) {unknown}; choose from {sorted(cost_model_names())}", field="pool")
    recipe = Recipe.from_metadata(problem.metadata)
    out: dict[str, Mapping[str, int]] = {}
    for name in pool:
        other = build(spec, recipe.priced_by(name)).with_budget(problem.budget)
        result = solve_or_none(other.problem, solver)
        if result is None:
            logging.getLogger(__name__).warning("pool member %s has no feasible plan at this budget: left out", name)
            continue
        out[name] = dict(result.bits)
    return out


def _bits_of(problem: AllocationProblem, choices: Mapping[str, int]) -> dict[str, int]:
    return {name: problem.layer(name).choices[i].bits for name, i in choices.items()}


def select_plan(spec: "ModelSpec", built: "BuiltProblem", k: int = 1, *, pool: Sequence[str] = DEFAULT_POOL,
                solver: str = "dp", measurer: "Measurer | None" = None, backends: bool = True,
                search: SearchRequest | None = None) -> Selection:
    """The measured selection of ``cetopt plan``: ``built``'s k best plans, each ``pool`` cost model's plan at
    the same budget, every installed backend's plan of ``built.problem`` (``backends``) and, with ``search``, the
    measured search's plan, all measured by :func:`selection_measure`; ``result.best`` is the plan to ship.

    Raises:
        ProblemError: as :func:`rerank`, :func:`pool_bits` and :func:`cetopt.search.api.run_search`.
    """
    import time

    from cetopt.measure import Measurer
    from cetopt.solvers.api import solve

    measurer = measurer or Measurer(spec)
    begin = time.perf_counter()
    others = pool_bits(spec, built.problem, pool, solver)
    seconds = time.perf_counter() - begin
    members: dict[str, Mapping[str, int]] = dict(others)
    method = str(built.problem.metadata.get("method", "")) or "problem"
    plans: dict[str, Mapping[str, int]] = {}
    start = time.perf_counter()
    if backends:
        from cetopt.search.api import backend_plans

        plans = backend_plans(built.problem, skip=(solver,))
        members.update({f"{method}/{name}": _bits_of(built.problem, c) for name, c in plans.items()})
    backend_seconds = time.perf_counter() - start
    found = None
    if search is not None:
        found = _search(spec, built, search, plans, others, k, measurer)
        members[f"search:{search.strategy}"] = dict(found.bits)
    optimum = solve(built.problem, solver)
    measure, split = selection_measure(measurer)
    result = rerank(built, measure, k, solver, pool=members)
    from cetopt.negatives import warn_if_negative

    # a WARNING naming the layers whose negative changes the shipped plan relies on
    warn_if_negative(built.problem, result.best.choices, measured=result.best.measured)
    return Selection(result=result, split=split, pool_seconds=seconds,
                     left_out=tuple(name for name in pool if name not in others),
                     backends=tuple(f"{method}/{name}" for name in plans), backend_seconds=backend_seconds,
                     search=found, surrogate_optimum=optimum.objective, surrogate_bound=optimum.bound,
                     seconds=time.perf_counter() - begin)


def _search(spec: "ModelSpec", built: "BuiltProblem", search: SearchRequest, plans: Mapping[str, Mapping[str, int]],
            others: Mapping[str, Mapping[str, int]], k: int, measurer: "Measurer") -> "SearchResult":
    """The measured search's result, seeded by the backends' plans (choices), the pool's (bits) and uniform."""
    from cetopt.baselines import uniform_bits
    from cetopt.problem.evaluate import choices_from_bits
    from cetopt.search.base import Seeding
    from cetopt.search.torch_measure import search_plan

    seeds: dict[str, Mapping[str, int]] = dict(plans)
    seeds.update({name: choices_from_bits(built.problem, bits) for name, bits in others.items()})
    avg = built.problem.budget.avg_bits
    uniform = uniform_bits(built.problem, avg) if avg is not None else None
    if uniform is not None:
        seeds["uniform"] = choices_from_bits(built.problem, uniform)
    return search_plan(spec, built, search, seeding=Seeding(extra=seeds, k=max(k, 4), backends=False),
                       measurer=measurer)


def budget_text(problem: AllocationProblem) -> str:
    """The problem's budget in words: "3.0 avg bits", or its fields."""
    budget = problem.budget
    if budget.avg_bits is not None and budget.replace(avg_bits=None).is_empty():
        return f"{budget.avg_bits} avg bits"
    return ", ".join(f"{k} {v:g}" for k, v in vars(budget).items() if v is not None)


def selection_table(selection: Selection, total_params: int) -> str:
    """The measured selection as a text table: each plan's source, size, predicted and measured loss change."""
    from cetopt.tables import format_table

    result = selection.result
    rows = [[p.label, f"{p.size_bits / total_params:.3f}", f"{p.predicted_loss:.6f}", f"{p.measured:.6f}",
             "<- returned" if p is result.best else ""] for p in result.plans]
    return format_table(["plan", "avg_bits", "predicted_dL (calibration)", f"measured_dL ({selection.split})", ""],
                        rows)


def rerank_report(target: str, k: int, *, budget: "Budget | None" = None, recipe: "Recipe | None" = None,
                  solver: str = "dp", pool: Sequence[str] = DEFAULT_POOL) -> str:
    """``cetopt demo TARGET --rerank K``: the k best plans of the model's problem under ``recipe`` (default: the
    default recipe) at ``budget`` (default: cetopt.recipe.DEFAULT_AVG_BITS average bits) and the pool's plans, each
    with its predicted and its measured loss change, and which one re-ranking returns (text table)."""
    from cetopt.modelspec import load_model_spec
    from cetopt.recipe import DEFAULT_RECIPE
    from cetopt.workflow import build_for

    recipe = recipe or DEFAULT_RECIPE
    spec = load_model_spec(target, objective=recipe.objective)
    built = build_for(spec, recipe, budget=budget, target=target)
    selection = select_plan(spec, built, k, pool=pool, solver=solver)
    result = selection.result
    return (f"{spec.name}: the {k} best plans of the {recipe.cost_model} problem at {budget_text(built.problem)} "
            f"({solver})"
            f"{' and the plans of ' + ', '.join(pool) if pool else ''}, re-ranked by the measured {selection.split} "
            f"loss change:\n{selection_table(selection, built.problem.total_params)}\n"
            f"returned: {result.best.label} (predicted {result.best.predicted_loss:.6f}, measured "
            f"{result.best.measured:.6f}); the solver's optimum measured {result.solver_best.measured:.6f}")

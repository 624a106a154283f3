"""Measured search over plans: a solver-like stage that measures whole plans instead of trusting the additive
surrogate, seeded and bounded by the exact solvers (EvoPress, arXiv 2410.14649).

``run_search(problem, PlanMeasurement(measure, n_batches), strategy=...)`` searches with an injected measurement;
``search_plan(spec, built, ...)`` (:mod:`cetopt.search.torch_measure`) measures a model's plans with torch.
Strategies: ``evopress``, ``local``, ``refit`` (:mod:`cetopt.search.registry`).
"""

from cetopt.search.api import DEFAULT_FORWARDS, DEFAULT_STRATEGY, backend_plans, run_search
from cetopt.search.base import (HistoryPoint, PlanMeasure, PlanMeasurement, PlanValidate, SearchBudget, SearchResult,
                                Seeding)
from cetopt.search.registry import SearchStrategy, get_strategy, register, strategy_names

__all__ = ["DEFAULT_FORWARDS", "DEFAULT_STRATEGY", "HistoryPoint", "PlanMeasure", "PlanMeasurement", "PlanValidate",
           "SearchBudget", "SearchResult", "SearchStrategy", "Seeding", "backend_plans", "get_strategy", "register",
           "run_search", "strategy_names"]

"""cetopt: curvature-driven per-layer compression plans, solved by swappable backends, with certificates.

Notebook use::

    from cetopt import load_problem, solve
    problem = load_problem("problems/demo/mlp-avg4.json")
    result = solve(problem, solver="ortools")      # or "ortools-mip", "highs", "cvxpy", "greedy", "dp"
    result.bits, result.objective, result.bound, result.gap

Bring a model and ship it (see README, "Your own model")::

    from cetopt import Budget, build_for, load_model_spec, plan_from_result, solve, write_artifact
    spec = load_model_spec("my_model.py:spec")                   # or a zoo name
    built = build_for(spec, budget=Budget(avg_bits=4))          # curvature -> problem (+ candidate weights)
    # the build's choices are one value: build_for(spec, get_recipe("cet"), ...) or DEFAULT_RECIPE.replace(bits=(2, 4, 8))
    plan = plan_from_result(built.problem, solve(built.problem, "dp"))
    write_artifact(spec, plan, "compressed/")                    # packed safetensors + plan + manifest

Measure plans instead of trusting the additive costs (a measured search seeded by the exact solvers)::

    from cetopt import SearchBudget, SearchRequest, search_plan
    found = search_plan(spec, built, SearchRequest("evopress", budget=SearchBudget(forwards=400)))
    found.bits, found.validation_dloss, found.surrogate_measured, found.forwards
"""

from cetopt._versions import __version__
from cetopt.errors import (CetoptError, ProblemError, SolverOptionError,
                           SolverUnavailableError, UnsupportedProblemError)
from cetopt.modelspec import load_model_spec
from cetopt.spec import ModelSpec

# everything else is imported on first use, so `cetopt extract nosuch` answers before numpy or torch load
_LAZY = {
    **dict.fromkeys(("AllocationProblem", "Budget", "Choice", "Edge", "EdgeKind", "Interaction", "Layer", "Minimize",
                     "compile_problem", "evaluate", "load_problem", "save_problem"), "cetopt.problem"),
    **dict.fromkeys(("SolveResult", "SolverConfig", "Status", "available_solvers", "register", "solve"),
                    "cetopt.solvers"),
    **dict.fromkeys(("LayerChoice", "Plan", "apply_plan", "plan_from_result"), "cetopt.quant.plan"),
    **dict.fromkeys(("load_compressed", "write_artifact", "evaluate_artifact"), "cetopt.artifact"),
    "build_for": "cetopt.workflow",
    **dict.fromkeys(("Recipe", "DEFAULT_RECIPE", "get_recipe"), "cetopt.recipe"),
    "Measurer": "cetopt.measure",
    **dict.fromkeys(("SearchBudget", "SearchRequest", "Seeding", "SearchResult", "run_search"), "cetopt.search"),
    "search_plan": "cetopt.search.torch_measure",
    "SearchRequest": "cetopt.search.base",
    "Seeding": "cetopt.search.base",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cetopt' has no attribute {name!r}")



__all__ = [
    "AllocationProblem", "Budget", "CetoptError", "Choice", "Edge", "EdgeKind", "Interaction",
    "Layer", "Minimize", "ModelSpec", "load_model_spec", "ProblemError", "SolveResult", "SolverConfig", "SolverOptionError",
    "SolverUnavailableError", "Status", "UnsupportedProblemError", "__version__", "available_solvers",
    "compile_problem", "evaluate", "load_problem", "register", "save_problem", "solve",
    "LayerChoice", "Plan", "apply_plan", "plan_from_result", "load_compressed", "write_artifact", "evaluate_artifact",
    "build_for", "Recipe", "DEFAULT_RECIPE", "get_recipe", "Measurer", "SearchBudget", "SearchRequest", "Seeding", "SearchResult", "run_search", "search_plan",
]

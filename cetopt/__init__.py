"""cetopt: curvature-driven per-layer compression plans, solved by swappable backends, with certificates.

Notebook use::

    from cetopt import load_problem, solve
    problem = load_problem("problems/demo/mlp-avg4.json")
    result = solve(problem, solver="ortools")      # or "ortools-mip", "highs", "cvxpy", "greedy", "dp"
    result.bits, result.objective, result.bound, result.gap
"""

from cetopt.errors import (CetoptError, ProblemError, SolverOptionError,
                           SolverUnavailableError, UnsupportedProblemError)
from cetopt.problem import (AllocationProblem, Budget, Choice, Edge, EdgeKind, Interaction, Layer, Minimize,
                            compile_problem, evaluate, load_problem, save_problem)
from cetopt.modelspec import ModelSpec, load_model_spec
from cetopt.solvers import SolveResult, SolverConfig, Status, available_solvers, register, solve

__version__ = "0.1.0"

__all__ = [
    "AllocationProblem", "Budget", "CetoptError", "Choice", "Edge", "EdgeKind", "Interaction",
    "Layer", "Minimize", "ModelSpec", "load_model_spec", "ProblemError", "SolveResult", "SolverConfig", "SolverOptionError",
    "SolverUnavailableError", "Status", "UnsupportedProblemError", "__version__", "available_solvers",
    "compile_problem", "evaluate", "load_problem", "register", "save_problem", "solve",
]

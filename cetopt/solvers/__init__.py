"""Solver backends behind one contract; see :mod:`cetopt.solvers.base` for how to add one."""

from cetopt.solvers.api import DEFAULT_SOLVER, solve
from cetopt.solvers.base import Capabilities, Solver
from cetopt.solvers.config import SolverConfig, load_solver_config, load_solver_configs
from cetopt.solvers.registry import available_solvers, get_solver, register, unregister
from cetopt.solvers.result import Outcome, SolveResult, Status

__all__ = [
    "DEFAULT_SOLVER", "Capabilities", "Outcome", "SolveResult", "Solver", "SolverConfig", "Status",
    "available_solvers", "get_solver", "load_solver_config", "load_solver_configs", "register", "solve",
    "unregister",
]

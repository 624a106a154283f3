"""The formal allocation problem: model, file format, evaluation, compiled form and layer graph."""

from cetopt.problem.compiled import CompiledProblem, compile_problem
from cetopt.problem.evaluate import Evaluation, choices_from_bits, evaluate
from cetopt.problem.feasibility import Floors, budget_shortfalls, floors
from cetopt.problem.io import FORMAT, dumps_problem, load_problem, parse_problem_json, problem_from_dict, \
    problem_to_dict, save_problem
from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, EdgeKind, Interaction, Layer, Minimize

__all__ = [
    "FORMAT", "AllocationProblem", "Budget", "Choice", "CompiledProblem", "Edge", "EdgeKind", "Evaluation",
    "Floors", "Interaction", "Layer", "Minimize", "budget_shortfalls", "choices_from_bits", "compile_problem",
    "dumps_problem", "evaluate", "floors", "load_problem", "parse_problem_json", "problem_from_dict",
    "problem_to_dict", "save_problem",
]

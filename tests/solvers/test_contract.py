"""The solver contract: registry, options, configs, time limits, and answers re-checked by solve()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cetopt import AllocationProblem, Budget, Choice, Interaction, Layer, SolveResult, Status, solve
from cetopt.errors import SolverOptionError, SolverUnavailableError, UnsupportedProblemError
from cetopt.problem.synthetic import synthetic_problem
from cetopt.solvers import Capabilities, Outcome, Solver, available_solvers, load_solver_configs, register, unregister

BACKENDS = ["dp", "greedy", "ortools", "ortools-mip", "highs", "cvxpy", "bruteforce"]


def test_every_backend_is_registered_and_installed() -> None:
    infos = {s.name: s for s in available_solvers()}
    assert set(BACKENDS) <= set(infos)
    assert all(infos[n].installed for n in BACKENDS)


def test_unknown_solver_and_option_are_refused_with_the_known_names() -> None:
    problem = synthetic_problem(5)
    with pytest.raises(SolverOptionError, match="available: .*greedy"):
        solve(problem, "gurobi")
    with pytest.raises(SolverOptionError, match="unknown option 'timelimit'; known options: workers"):
        solve(problem, "ortools", timelimit=3)
    with pytest.raises(SolverOptionError, match="expects int"):
        solve(problem, "ortools", workers="two")


def test_unsupported_problems_are_refused_before_solving() -> None:
    layers = (Layer("a", 10, (Choice(4, 1.0), Choice(8, 0.0))), Layer("b", 10, (Choice(4, 1.0), Choice(8, 0.0))))
    problem = AllocationProblem("p", layers, Budget(avg_bits=6),
                                interactions=(Interaction("a", "b", ((1.0, 0.0), (0.0, 0.0))),))
    with pytest.raises(UnsupportedProblemError, match="interaction terms"):
        solve(problem, "dp")


class _LyingSolver(Solver):
    """Claims optimality for an allocation that breaks the budget."""

    name = "liar"
    capabilities = Capabilities(exact=True)

    def run(self, compiled, options, *, time_limit, seed) -> Outcome:  # type: ignore[no-untyped-def]
        worst = np.array([int(np.argmax(g.size)) for g in compiled.groups])
        return Outcome(Status.OPTIMAL, choice_index=worst, bound=0.0)


def test_solve_rechecks_answers_so_a_backend_cannot_lie() -> None:
    register("liar", _LyingSolver)
    try:
        result = solve(synthetic_problem(6, avg_bits=3), "liar")
    finally:
        unregister("liar")
    assert result.status is Status.ERROR
    assert "infeasible allocation" in result.message


class _MissingPackage(Solver):
    name = "needs-gurobi"
    requires = ("gurobipy_not_installed_here",)
    install_hint = "pip install gurobipy"

    def run(self, compiled, options, *, time_limit, seed) -> Outcome:  # type: ignore[no-untyped-def]
        raise AssertionError("never called")


def test_missing_optional_backend_names_the_install_command() -> None:
    register("needs-gurobi", _MissingPackage)
    try:
        with pytest.raises(SolverUnavailableError, match="pip install gurobipy"):
            solve(synthetic_problem(3), "needs-gurobi")
    finally:
        unregister("needs-gurobi")


def test_registry_refuses_a_name_clash() -> None:
    with pytest.raises(SolverOptionError, match="already registered"):
        register("greedy", _LyingSolver)


def test_shipped_solver_configs_all_load_and_solve(root: Path) -> None:
    configs = load_solver_configs(root / "solvers")
    assert len(configs) >= 6
    problem = synthetic_problem(20, seed=4)
    optimum = solve(problem, "dp").objective
    for config in configs:
        result = solve(problem, config)
        assert result.success, (config.name, result.message)
        assert result.solver == config.name
        assert result.objective >= optimum - 1e-9 * optimum


def test_time_limit_returns_the_best_answer_with_an_honest_status() -> None:
    problem = synthetic_problem(3000, n_choices=8, seed=2, avg_bits=3.3)
    result = solve(problem, "ortools", time_limit=0.5)
    assert result.seconds < 10
    assert result.status in (Status.OPTIMAL, Status.FEASIBLE)
    if result.status is Status.FEASIBLE:
        assert result.limit == "time" and result.gap is not None and result.gap >= 0


def test_result_to_dict_has_exactly_the_documented_keys() -> None:
    result = solve(synthetic_problem(4), "greedy")
    data = result.to_dict()
    assert set(data) == {f for f in SolveResult.__dataclass_fields__}
    assert data["status"] == result.status.value
    assert set(data["bits"]) == {f"layer{i:05d}" for i in range(4)}


def test_cvxpy_and_ortools_import_in_both_orders_and_both_solve() -> None:
    """cvxpy >= 1.9 (highspy >= 1.14) and OR-Tools bundle clashing HiGHS copies; the pins avoid it."""
    for first, second in (("cvxpy", "ortools"), ("ortools", "cvxpy")):
        code = (
            "import importlib\n"
            f"importlib.import_module({'cvxpy' if first == 'cvxpy' else 'ortools.sat.python.cp_model'!r})\n"
            f"importlib.import_module({'cvxpy' if second == 'cvxpy' else 'ortools.sat.python.cp_model'!r})\n"
            "import cvxpy\n"
            "assert 'HIGHS' in cvxpy.installed_solvers(), cvxpy.installed_solvers()\n"
            "from cetopt.problem.synthetic import synthetic_problem\n"
            "from cetopt import solve\n"
            "p = synthetic_problem(8, seed=1)\n"
            "a = solve(p, 'ortools'); b = solve(p, 'cvxpy'); c = solve(p, 'ortools-mip')\n"
            "assert a.status.value == 'optimal' and c.status.value == 'optimal', (a.message, c.message)\n"
            "assert b.success and b.bound <= a.objective + 1e-9\n"
            "print('ok')\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "ok" in out.stdout, (first, second, out.stderr[-2000:])


def test_light_paths_never_import_torch_or_solver_libraries() -> None:
    code = ("import sys\nfrom cetopt import solve\nfrom cetopt.problem.synthetic import synthetic_problem\n"
            "solve(synthetic_problem(30), 'greedy'); solve(synthetic_problem(30), 'dp')\n"
            "heavy = [m for m in ('torch', 'cvxpy', 'ortools', 'highspy') if m in sys.modules]\n"
            "assert not heavy, heavy\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]

"""Backends on inputs they cannot or should not take: bruteforce refuses what it cannot enumerate (no
OverflowError, with or without a time limit), a repeated or self interaction pair is refused when the
problem is built (so every backend sees the same problem), and a relaxation bound is certified before it is
reported: recomputed from the LP multipliers by weak duality, and dropped, with a sentence, when it exceeds
the objective of a feasible plan found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cetopt.cli import main
from cetopt.errors import ProblemError, UnsupportedProblemError
from cetopt.problem.io import dumps_problem, parse_problem_json, save_problem
from cetopt.problem.model import Interaction
from cetopt.problem.synthetic import synthetic_problem
from cetopt.solvers.api import solve


@pytest.mark.parametrize("time_limit", [None, 2.0])
def test_bruteforce_refuses_what_it_cannot_enumerate(tmp_path: Path, time_limit: float | None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    problem = synthetic_problem(10_000, n_choices=3, seed=0)
    with pytest.raises(UnsupportedProblemError, match="more than 2000000 allocations"):
        solve(problem, "bruteforce", time_limit=time_limit)
    save_problem(problem, tmp_path / "big.json")
    args = ["solve", str(tmp_path / "big.json"), "--solver", "bruteforce"]
    assert main(args + (["--time-limit", str(time_limit)] if time_limit else [])) == 2
    assert "bruteforce" in capsys.readouterr().err


def test_bruteforce_option_cap_is_an_error_status_not_a_crash() -> None:
    problem = synthetic_problem(8, n_choices=3, seed=0)  # 6561 allocations
    result = solve(problem, "bruteforce", max_combinations=100)
    assert result.status.value == "error" and "max_combinations" in result.message


def with_terms(*pairs: tuple[str, str]) -> dict:
    data = json.loads(dumps_problem(synthetic_problem(4, n_choices=3, seed=0)))
    data["interactions"] = [{"layers": list(p), "loss": [[0.0] * 3 for _ in range(3)]} for p in pairs]
    return data


@pytest.mark.parametrize("pairs", [(("layer00000", "layer00001"), ("layer00000", "layer00001")), (("layer00000", "layer00001"), ("layer00001", "layer00000")), (("layer00002", "layer00002"),)])
def test_a_repeated_or_self_pair_is_refused_for_every_backend(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ProblemError) as err:
        parse_problem_json(json.dumps(with_terms(*pairs)))
    assert err.value.field == f"interactions[{len(pairs) - 1}].layers"
    base = synthetic_problem(4, n_choices=3, seed=0)
    zero = tuple((0.0,) * 3 for _ in range(3))
    with pytest.raises(ProblemError):
        base.with_changes(interactions=tuple(Interaction(a=a, b=b, loss=zero) for a, b in pairs))


def inflate(monkeypatch: pytest.MonkeyPatch, factor: float) -> None:
    """Make the relaxation's reported value wrong by ``factor``, as an inaccurate solver would."""
    from cetopt.solvers import cvxpy_relax

    real = cvxpy_relax._solve

    def solve_inflated(cp, relaxed, seconds):  # type: ignore[no-untyped-def]
        status = real(cp, relaxed, seconds)
        if relaxed.problem.value is not None:
            relaxed.problem._value = relaxed.problem.value * factor + 1e-3
        return status

    monkeypatch.setattr(cvxpy_relax, "_solve", solve_inflated)


@pytest.mark.parametrize("seed", range(4))
def test_an_inaccurate_lp_value_never_becomes_a_bound_above_the_optimum(monkeypatch: pytest.MonkeyPatch,
                                                                        seed: int) -> None:
    pytest.importorskip("cvxpy")
    problem = synthetic_problem(12, n_choices=4, seed=seed)
    optimum = solve(problem, "dp").objective
    honest = solve(problem, "cvxpy")
    inflate(monkeypatch, 1.5)
    result = solve(problem, "cvxpy")
    assert result.status.value == "feasible" and result.bound is not None
    assert result.bound <= optimum * (1 + 1e-9)  # the dual certificate, not the inflated value
    assert result.bound == pytest.approx(honest.bound, rel=1e-6)


def test_a_qp_bound_above_a_feasible_plan_is_not_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cvxpy")
    data = with_terms(("layer00000", "layer00001"))
    data["interactions"][0]["loss"] = [[0.01 * (i + j) for j in range(3)] for i in range(3)]
    problem = parse_problem_json(json.dumps(data))
    inflate(monkeypatch, 3.0)
    result = solve(problem, "cvxpy", relaxation="qp", convexify="diagonal")
    assert result.status.value == "feasible" and result.bound is None and result.gap is None
    assert "not reported as a certified bound" in result.message

"""The fuzz run of `make fuzz` (tests/reliability/fuzz_run.py), small: every backend against bruteforce on
random problems of every instance family, and hostile problem and plan files through the command line; no
wrong optimum, no bound above it, no traceback, no hang."""

from __future__ import annotations

from fuzz_run import BAD, FAMILIES, failures, random_problem, run, verdicts


def test_a_short_fuzz_run_finds_nothing() -> None:
    counts = run(len(FAMILIES) * 2, 40, seed=1, timeout=60)
    assert failures(counts) == 0, counts
    assert sum(counts["solvers"].values()) > len(FAMILIES) and sum(counts["files"].values()) == 40
    assert counts["files"]["exit 2"] > 20  # most hostile files are refused as bad input


def test_the_verdicts_catch_a_wrong_answer() -> None:
    truth = {"status": "optimal", "objective": 1.0, "bound": 1.0}
    assert verdicts({"bruteforce": truth, "x": {"status": "optimal", "objective": 1.1, "bound": 1.0}},
                    {"x"})["wrong optimal"] == 1
    assert verdicts({"bruteforce": truth, "x": {"status": "feasible", "objective": 1.2, "bound": 1.05}},
                    {"x"})["bound above optimum"] == 1
    assert verdicts({"bruteforce": truth, "x": {"status": "infeasible", "objective": None, "bound": None}},
                    {"x"})["wrong infeasible"] == 1
    assert verdicts({"bruteforce": truth, "x": {"status": "traceback"}}, set())["traceback"] == 1
    assert set(BAD) >= {"wrong optimal", "traceback", "hang"}


def test_every_family_builds_a_problem() -> None:
    import random

    from cetopt.problem.io import problem_from_dict

    rng = random.Random(0)
    for family in FAMILIES:
        problem_from_dict(random_problem(rng, family))

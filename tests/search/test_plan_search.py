"""``cetopt plan --search``: the shipped plan records where it came from and what it cost, the pool holds every
installed backend's plan and the search's, and the surrogate's optimum and bound are reported beside the winner."""

from __future__ import annotations

import contextlib
import io

import pytest

from cetopt.cli import main
from cetopt.cli import build_parser


def test_plan_with_search_records_source_cost_and_the_surrogate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cetopt.problem.evaluate import choices_from_bits
    from cetopt.problem.model import Budget
    from cetopt.quant.plan import Plan
    from cetopt.modelspec import load_model_spec
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    out, path = io.StringIO(), tmp_path / "plan.json"
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["plan", "digits-mlp", "--avg-bits", "3", "--search", "local", "--search-forwards", "120",
                     "--out", str(path)]) == 0
    plan = Plan.load(path)
    extra = plan.extra
    labels = [c["plan"] for c in extra["selection"]["candidates"]]
    members = " ".join(labels)
    assert "search:local" in members and "cet-upper/greedy" in members and "cet-upper/waterfilling" in members
    measured = {c["plan"]: c["measured_loss"] for c in extra["selection"]["candidates"]}
    assert extra["selected"] == min(measured, key=measured.get)
    assert extra["source"]["member"] == extra["selected"].split(" ")[0]
    search = extra["search"]
    assert 0 < search["forwards"] <= 120 and extra["cost"]["search_forwards"] == search["forwards"]
    assert search["strategy"] == "local" and search["selected_on"] == "validation"
    # the surrogate's optimum and its certified bound, recomputed independently
    spec = load_model_spec("digits-mlp")
    problem = build_for(spec, budget=Budget(avg_bits=3.0)).problem
    optimum = solve(problem, "ortools")
    assert extra["surrogate"]["optimum"] == pytest.approx(optimum.objective, rel=1e-6)
    assert extra["surrogate"]["bound"] <= extra["surrogate"]["optimum"] + 1e-12
    assert extra["surrogate"]["measured"] == pytest.approx(measured[next(l for l in labels if l.startswith("cet-upper#0"))])
    size = sum(problem.layer(n).size_bits(problem.layer(n).choices[i])
               for n, i in choices_from_bits(problem, {n: c.bits for n, c in plan.layers.items()}).items())
    assert size <= problem.max_size_bits * (1 + 1e-9)
    text = out.getvalue()
    assert "certified bound" in text and "search local:" in text


def test_plan_search_flags_share_the_library_defaults() -> None:
    from cetopt.search import DEFAULT_FORWARDS, strategy_names

    args = build_parser().parse_args(["plan", "digits-mlp", "--out", "x.json"])
    assert args.search is None and args.search_forwards == DEFAULT_FORWARDS and args.search_seconds is None
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["plan"]._actions
                  if a.dest == "search")
    assert tuple(action.choices) == tuple(strategy_names())


def test_a_search_budget_too_small_is_refused_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["plan", "digits-mlp", "--search", "evopress", "--search-forwards", "3",
                     "--out", str(tmp_path / "p.json")])
    assert code != 0 and "search_forwards" in err.getvalue() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("flags", [["--search-forwards", "0"], ["--search-forwards", "9" * 5000],
                                   ["--search-seconds", "nan"], ["--search-seconds", "-1"], ["--search", "annealing"]])
def test_bad_search_flags_are_refused_by_the_parser(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(["plan", "digits-mlp", "--out", "x.json", *flags])
    assert stop.value.code == 2

"""k-best plans against brute-force enumeration, and re-ranking by a measurement on a tiny real model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.problem.evaluate import evaluate
from cetopt.problem.model import AllocationProblem, Budget
from cetopt.rerank import k_best, rerank
from strategies import problems


def _brute_force(problem: AllocationProblem) -> list[float]:
    """Objective of every feasible allocation, ascending."""
    values = []
    for combo in itertools.product(*(range(len(layer.choices)) for layer in problem.layers)):
        ev = evaluate(problem, dict(zip(problem.layer_names, combo)))
        if not ev.violations:
            values.append(ev.objective)
    return sorted(values)


@settings(max_examples=40, deadline=None)
@given(problems(max_layers=4))
def test_k_best_are_the_k_smallest_feasible_objectives(problem: AllocationProblem) -> None:
    truth = _brute_force(problem)
    try:
        plans = k_best(problem, 6, solver="bruteforce")
    except ProblemError:  # inconsistent problems (e.g. ties without a common bit-width) are refused up front
        return
    assert len(plans) == min(6, len(truth))
    scale = max([1.0] + [abs(v) for v in truth])
    for plan, expected in zip(plans, truth):
        assert plan.objective == pytest.approx(expected, abs=1e-9 * scale)
        ev = evaluate(problem, plan.choices)  # choices index the original problem
        assert not ev.violations and ev.objective == pytest.approx(plan.objective, abs=1e-9 * scale)
    assert len({tuple(sorted(p.choices.items())) for p in plans}) == len(plans)  # all distinct


def test_k_must_be_positive() -> None:
    from cetopt.problem.synthetic import synthetic_problem

    with pytest.raises(ProblemError) as info:
        k_best(synthetic_problem(3, n_choices=3, seed=0), 0)
    assert info.value.field == "k"


def _tiny_built():  # type: ignore[no-untyped-def]
    from cetopt.builders.second_order import build, replace_weights
    from tests.curvature.test_curvature import ce_loss, tiny_data, tiny_model

    model, data = tiny_model(), tiny_data()
    from cetopt.modelspec import ModelSpec
    from cetopt.recipe import Recipe

    spec = ModelSpec(name="tiny", model=model, calibration=data, loss_fn=ce_loss)
    built = build(spec, Recipe(cost_model="cet-nograd", bits=(2, 3, 4, 8)),
                  cache_dir=False).with_budget(Budget(avg_bits=4.0))
    validation = tiny_data(seed=7)

    def measure(weights):  # type: ignore[no-untyped-def]
        swapped = replace_weights(model, weights)
        return float(sum(ce_loss(swapped, b) - ce_loss(model, b) for b in validation) / len(validation))

    return built, measure


def test_rerank_returns_the_best_measured_plan() -> None:
    built, measure = _tiny_built()
    result = rerank(built, measure, 5, solver="dp")
    assert [p.rank for p in result.plans] == list(range(len(result.plans))) and len(result.plans) == 5
    assert result.best.measured == min(p.measured for p in result.plans)
    assert result.solver_best.objective == min(p.objective for p in result.plans)
    assert all(p.size_bits <= built.problem.max_size_bits + 1e-6 for p in result.plans)


def test_demo_rerank_reports_both_objectives() -> None:
    from cetopt.cli import main

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "digits-mlp", "--rerank", "3", "--avg-bits", "4"]) == 0
    text = out.getvalue()
    assert "predicted_dL (calibration)" in text and "measured_dL (validation)" in text
    assert text.count("<- returned") == 1 and "the solver's optimum measured" in text


def test_a_pool_plan_is_measured_beside_the_k_best_and_can_win() -> None:
    built, measure = _tiny_built()
    names = built.problem.layer_names
    cheap = {n: 2 for n in names}  # every layer at 2 bits: within the 4-bit budget, far from the optimum
    plain = rerank(built, measure, 1)
    result = rerank(built, measure, 1, pool={"all-2-bit": cheap, "same-as-optimum": dict(plain.best.bits)})
    labels = [p.label for p in result.plans]
    assert labels == ["cet-nograd#0 (= same-as-optimum)", "all-2-bit"]  # the twin is measured once, named
    pooled = result.plans[1]
    assert pooled.rank is None and dict(pooled.bits) == cheap
    assert pooled.measured == pytest.approx(measure(built.compressed_weights(cheap)))
    assert result.best.measured == min(p.measured for p in result.plans)
    assert result.solver_best.rank == 0


def test_a_pool_plan_over_budget_is_refused_by_name() -> None:
    built, measure = _tiny_built()
    with pytest.raises(ProblemError) as info:
        rerank(built, measure, 1, pool={"all-8-bit": {n: 8 for n in built.problem.layer_names}})
    assert info.value.field == "pool" and "all-8-bit" in str(info.value) and "same budget" in str(info.value)


def test_plan_command_writes_the_best_measured_plan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import contextlib
    import io

    from cetopt.cli import main
    from cetopt.quant.plan import Plan

    out = io.StringIO()
    path = tmp_path / "plan.json"
    with contextlib.redirect_stdout(out):
        assert main(["plan", "digits-mlp", "--avg-bits", "3", "--rerank", "2", "--out", str(path)]) == 0
    plan = Plan.load(path)
    selection = plan.extra["selection"]
    assert selection["split"] == "validation" and selection["pool"] == ["hawq-v3"]
    measured = {c["plan"]: c["measured_loss"] for c in selection["candidates"]}
    assert [name.split(" ")[0] for name in measured][:2] == ["cet-upper#0", "cet-upper#1"]
    assert len(measured) == 3 or any("(= hawq-v3)" in name for name in measured)  # HAWQ-V3's, or its twin named
    assert plan.extra["selected"] == min(measured, key=measured.get)
    assert plan.model == "digits-mlp" and plan.quantizer.clip == "mse" and "fingerprint_weights" in plan.extra
    assert "<- returned" in out.getvalue()


def test_plan_command_names_an_unknown_pool_member() -> None:
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.synthetic import synthetic_problem
    from cetopt.rerank import pool_bits

    with pytest.raises(ProblemError) as info:
        pool_bits(load_model_spec("digits-mlp"), synthetic_problem(3, n_choices=3, seed=0), ["nosuch"])
    assert info.value.field == "pool" and "nosuch" in str(info.value)


@settings(max_examples=40, deadline=None)
@given(problems(max_layers=4, interactions=False), st.integers(0, 2**16))
def test_rerank_with_a_pool_returns_the_best_measured_of_every_plan(problem: AllocationProblem, seed: int) -> None:
    import numpy as np
    import torch

    from cetopt.builders.second_order import BuiltProblem

    feasible = [dict(zip(problem.layer_names, combo))
                for combo in itertools.product(*(range(len(layer.choices)) for layer in problem.layers))
                if not evaluate(problem, dict(zip(problem.layer_names, combo))).violations]
    if not feasible:
        return
    rng = np.random.default_rng(seed)
    other = feasible[int(rng.integers(len(feasible)))]
    bits = {layer.name: layer.choices[other[layer.name]].bits for layer in problem.layers}
    weights = {layer.name: [torch.tensor(float(v)) for v in rng.normal(size=len(layer.choices))]
               for layer in problem.layers}

    def measure(w):  # type: ignore[no-untyped-def]  # a made-up measurement that disagrees with the objective
        return float(sum(t.item() for t in w.values()))

    try:
        result = rerank(BuiltProblem(problem=problem, weights=weights), measure, 3, solver="bruteforce",
                        pool={"other": bits})
    except ProblemError:  # inconsistent problems are refused up front, as in k_best
        return
    values = [measure({n: weights[n][c[n]] for n in problem.layer_names}) for c in (p.choices for p in result.plans)]
    assert result.best.measured == pytest.approx(min(values))
    assert all(not evaluate(problem, p.choices).violations for p in result.plans)
    keys = [tuple(sorted(p.choices.items())) for p in result.plans]
    assert len(set(keys)) == len(keys)  # every plan measured once
    named = [p for p in result.plans if p.source == "other" or "other" in p.same_as]
    assert len(named) == 1 and dict(named[0].choices) == other


def test_demo_says_which_plan_cetopt_plan_would_ship() -> None:
    import re

    from cetopt.pipeline import run_demo
    from cetopt.rerank import DEFAULT_POOL

    from cetopt.problem.model import Budget

    text = run_demo("digits-mlp", budget=Budget(avg_bits=3.0), solvers=["dp"])
    line = next(row for row in text.splitlines() if row.startswith("`cetopt plan`"))
    measured = {m.group(1): float(m.group(2)) for m in re.finditer(r"([\w.-]+#?\d*(?: \(= [^)]*\))?) ([+-]\d\.\d+)", line)}
    assert "cet-upper#0" in " ".join(measured) and all(name in line for name in DEFAULT_POOL)
    shipped = line.rsplit("-> ships ", 1)[1]
    assert measured[shipped] == min(measured.values())

"""The benchmark scripts run end to end on tiny settings and write results the README generator reads."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from cetopt import solve
from cetopt.results.speed import merged_models, solver_cells

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "benchmarks" / name), run_name="__main__")
    assert done.value.code == 0


@pytest.mark.slow
def test_solver_benchmark_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_script("solvers.py", ["--sizes", "4", "--choices", "8", "--backends", "dp", "greedy", "--rounds", "2",
                              "--no-wall-check", "--part", "t", "--run", "1", "--out-dir", str(tmp_path)],
               monkeypatch)
    data = json.loads((tmp_path / "solvers-t-run1.json").read_text())
    assert data["complete"] and (tmp_path / "solvers-t-run1.txt").exists()
    rows = solver_cells([data])[(4, 8)]
    assert set(rows) == {"dp", "greedy", "pulp-cbc"}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from solvers import make_problem  # the same problem, rebuilt independently of the run

    truth = solve(make_problem(4, 8, 1, 3.5), "bruteforce").objective
    assert rows["dp"]["objective"] == pytest.approx(truth, rel=1e-9)
    # CBC stops within its default relative gap (1e-4), so its "optimal" may sit above the optimum
    assert truth * (1 - 1e-12) <= rows["pulp-cbc"]["objective"] <= truth * (1 + 1e-4)
    assert rows["greedy"]["objective"] >= truth * (1 - 1e-12)
    for name in ("dp", "greedy"):
        row = rows[name]
        assert len(row["call_s"]["values"]) == 2 and row["process_s"]["median"] > row["call_s"]["median"]
        assert row["peak_process_rss_bytes"] > 10 * 2**20 and row["pulp_over_call"]["median"] > 0
        assert 0 < row["outside_solver_in_process"]["median"] < 1


@pytest.mark.slow
def test_solver_benchmark_pools_fresh_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_script("solvers.py", ["--sizes", "4", "--choices", "8", "--backends", "dp", "--process-backends", "dp",
                              "--rounds", "2", "--processes", "2", "--no-wall-check", "--no-memory", "--part", "p",
                              "--run", "1", "--out-dir", str(tmp_path)], monkeypatch)
    data = json.loads((tmp_path / "solvers-p-run1.json").read_text())
    timing = data["cells"][0]["timing"]
    assert timing["processes"] == 2 and timing["rounds"] == 4
    assert len(timing["part_medians"]["dp call"]) == 2
    rows = solver_cells([data])[(4, 8)]
    assert len(rows["dp"]["call_s"]["values"]) == 4 and len(rows["dp"]["pulp_over_call"]["values"]) == 4
    assert "pooled from 2 fresh processes" in (tmp_path / "solvers-p-run1.txt").read_text()


@pytest.mark.slow
def test_curvature_benchmark_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_script("curvature.py", ["--models", "digits-cnn", "--rounds", "2", "--eq-rounds", "2", "--eq-seconds", "0",
                                "--variance-probes", "6", "--target-probes", "4", "--direct", "digits-cnn",
                                "--direct-rounds", "1", "--run", "1", "--out-dir", str(tmp_path)], monkeypatch)
    data = json.loads((tmp_path / "curvature-run1.json").read_text())
    row = merged_models([data])["digits-cnn"]
    assert row["test_accuracy"] > 0.9  # trained weights
    eq = row["equal_error"]
    assert eq["variance_ratio_vs_restricted"]["restricted"] == {"median": 1.0, "max": 1.0, "argmax_layer": "conv1"}
    assert eq["rounds_needed"]["restricted"] == 4
    seconds = eq["timing"]["seconds"]
    loop = [s + 4 * p for s, p in zip(seconds["loop setups"]["values"], seconds["loop probes"]["values"])]
    assert eq["seconds"]["loop"]["values"] == pytest.approx(loop)
    assert "restricted" in row["direct"]["speedup_vs_loop"]
    assert row["hvp"]["hvp_one_off_over_fb"]["median"] > 0


def test_distributed_benchmark_compares_problem_files_choice_by_choice(tmp_path: Path) -> None:
    import dataclasses

    from cetopt.problem.io import save_problem
    from cetopt.problem.synthetic import synthetic_problem
    from cetopt.results.speed import distributed_sentence

    import importlib.util

    # loaded from its path: benchmarks/ on sys.path would shadow installed packages named like its scripts
    spec = importlib.util.spec_from_file_location("torchrun_benchmark", ROOT / "benchmarks" / "torchrun.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    difference = module.difference

    problem = synthetic_problem(3, n_choices=4, seed=2)
    layer = problem.layers[1]
    choices = list(layer.choices)
    choices[2] = dataclasses.replace(choices[2], loss=choices[2].loss * 1.001)  # one choice 0.1% off
    changed = problem.with_changes(layers=[problem.layers[0], dataclasses.replace(layer, choices=tuple(choices)),
                                           problem.layers[2]])
    save_problem(problem, tmp_path / "one.json")
    save_problem(changed, tmp_path / "ranks.json")
    d = difference(tmp_path / "one.json", tmp_path / "ranks.json")
    assert d["same_layers_and_choices"] and d["sizes_equal"] and d["choices"] == 12
    assert d["max_relative_difference"] == pytest.approx(0.001 / 1.001, rel=1e-6) and d["worst_choice"] == 6
    assert d["median_relative_difference"] == 0.0
    assert d["worst_values"] == pytest.approx([choices[2].loss / 1.001, choices[2].loss])
    assert difference(tmp_path / "one.json", tmp_path / "one.json")["same_dp_plan"] is True
    from cetopt.solvers.api import solve
    picked = solve(problem, "dp").choices[layer.name]  # price dp's pick for layer 1 out: the plan must change
    repriced = list(layer.choices)
    repriced[picked] = dataclasses.replace(repriced[picked], loss=1e9)
    save_problem(problem.with_changes(layers=[problem.layers[0], dataclasses.replace(layer, choices=tuple(repriced)),
                                              problem.layers[2]]), tmp_path / "other.json")
    assert difference(tmp_path / "one.json", tmp_path / "other.json")["same_dp_plan"] is False
    assert difference(tmp_path / "one.json", tmp_path / "one.json")["max_relative_difference"] == 0.0
    row = {"model": "m", "ranks": 2, "difference": d, "speedup": {"median": 1.5},
           "timing": {"rounds": 3, "seconds": {}}}
    (tmp_path / "torchrun-zoo.json").write_text(json.dumps({"rows": [row]}))
    sentence = distributed_sentence(tmp_path)
    assert sentence is not None and "m 1.50x (3 rounds" in sentence and "1.0e-03" in sentence
    assert distributed_sentence(tmp_path / "nothing-here") is None


def test_pretrained_benchmark_compares_re_rounded_plans_with_baselines_rounded_alike() -> None:
    """A plan re-rounded with AdaRound is judged against HAWQ-V3 and uniform re-rounded the same way (an allocation
    comparison under that quantiser), never against their round-to-nearest plans; verdicts are per rounding."""
    import importlib.util

    import numpy as np

    def load(name: str):  # type: ignore[no-untyped-def]
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    report = load("cost_models_pretrained_report")
    bench = load("cost_models_pretrained")
    rng = np.random.default_rng(0)
    base = rng.random(200)
    # RTN: the default loses to uniform; with AdaRound it beats both, and HAWQ-V3+adaround beats RTN uniform hugely
    default = bench.ALLOCATIONS[0]  # the default cost model's plan
    means = {default: 0.0, "hawq-v3": 0.0, "uniform": 0.2, "cet": 0.0,
             f"{default}+adaround": 0.6, "hawq-v3+adaround": 0.4, "uniform+adaround": 0.4}
    outcomes = {f"{m}@3": {"cosine": base + shift} for m, shift in means.items()}
    rows = [{"plan": label, "avg_bits_used": 3.0, "packed_bits": 1} for label in outcomes]
    case = {"headline": "cosine", "lower_is_better": set()}
    found = {c["method"]: c for c in bench.comparisons("m", case, {"rows": rows, "outcomes": outcomes})
             if c["avg_bits"] == 3.0}
    assert found[f"{default}+adaround"]["vs_uniform"]["estimate"] == pytest.approx(0.2)  # vs uniform+adaround
    assert found["hawq-v3+adaround"]["vs_uniform"]["estimate"] == pytest.approx(0.0)
    assert found[default]["vs_uniform"]["verdict"] == "worse"
    verdicts = {v["rounding"]: v for v in report.verdicts(list(found.values()), default)}
    assert set(verdicts) == {"nearest", "adaround"}
    assert not verdicts["nearest"]["better_than_uniform"] and verdicts["adaround"]["better_than_uniform"]
    assert verdicts["adaround"]["not_worse_than_hawq"]


def test_search_benchmark_resamples_photos_when_one_cell_carries_them() -> None:
    """MobileNetV2's one pretrained cell: its crops share photos, so the CI must resample photos (cluster bootstrap),
    which is wider than the crop-level bootstrap when the difference sits in a few photos; several seeds' cells
    keep the (seed, example) bootstrap."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("search_benchmark", ROOT / "benchmarks" / "search.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    photos = [str(i // 16) for i in range(128)]  # 8 photos x 16 crops
    a = np.zeros(128)
    a[:16] = 1.0  # the plan wins every crop of one photo and nothing else
    cell = {"plans": {"x": {"outcomes": a}, "y": {"outcomes": np.zeros(128)}}}
    crops = bench.compare([cell], "x", "y")
    by_photo = bench.compare([{**cell, "clusters": photos}], "x", "y")
    assert crops["estimate"] == pytest.approx(by_photo["estimate"]) == pytest.approx(0.125)
    assert crops["verdict"] == "better"  # 16 independent-looking crops
    assert by_photo["verdict"] == "tie" and by_photo["high"] - by_photo["low"] > crops["high"] - crops["low"]
    two_seeds = bench.compare([{**cell, "clusters": photos}] * 2, "x", "y")
    assert two_seeds["seeds"] == 2 and two_seeds["estimate"] == pytest.approx(0.125)


def test_search_benchmark_compares_each_row_with_the_best_single_backend_on_test() -> None:
    """'At least every single backend's' is read strictly: each row is compared with the backend plan (dp's or
    another backend's) that scores highest on test, and that plan's name is recorded."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("search_benchmark", ROOT / "benchmarks" / "search.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ones, zeros = np.ones(40), np.zeros(40)
    half = np.r_[np.ones(20), np.zeros(20)]
    cell = {"plans": {"dp": {"outcomes": half}, "backend:cet-upper/greedy": {"outcomes": ones},
                      "backend:cet-upper/cvxpy": {"outcomes": zeros}, "pool": {"outcomes": half},
                      "hawq-v3": {"outcomes": half}, "uniform": {"outcomes": zeros}, "evopress@400": {"outcomes": half}}}
    assert bench.best_single_backend([cell]) == "backend:cet-upper/greedy"
    rows = {r["plan"]: r for r in bench.summarise({"m": {"3": [cell]}}, ["dp", "pool", "hawq-v3", "uniform",
                                                                            "evopress@400"])}
    assert set(rows) == {"dp", "backend:cet-upper/cvxpy", "backend:cet-upper/greedy", "pool", "hawq-v3", "uniform",
                         "evopress@400"}
    assert rows["evopress@400"]["vs_best_backend"]["verdict"] == "worse"
    assert rows["evopress@400"]["vs_best_backend"]["estimate"] == pytest.approx(-0.5)
    assert rows["backend:cet-upper/greedy"]["vs_best_backend"] is None  # itself


def test_search_budget_curve_resamples_a_cells_sources_when_it_has_them() -> None:
    """The curve's stratified CI: without clusters it matches a crop-level bootstrap's width; with the gain in one
    of 8 photos it resamples photos and widens to a tie; the estimate stays the plain mean either way."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("search_benchmark", ROOT / "benchmarks" / "search.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    d = np.zeros(128)
    d[:16] = 1.0
    photos = [str(i // 16) for i in range(128)]
    crops = bench.stratified_ci([d])
    by_photo = bench.stratified_ci([d], clusters=[photos])
    assert crops["estimate"] == by_photo["estimate"] == pytest.approx(0.125)
    assert crops["verdict"] == "better" and by_photo["verdict"] == "tie"
    assert by_photo["high"] - by_photo["low"] > crops["high"] - crops["low"]
    assert bench.stratified_ci([d], clusters=[None]) == crops  # a cell without sources: the example bootstrap

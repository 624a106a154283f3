"""`cetopt prove` on the smallest zoo model: every check runs, states a verdict with its statistic, and the
report, its plots and its JSON are written; plus checks that must hold on any model."""

from __future__ import annotations

import json

import pytest

from cetopt.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("prove")
    assert main(["prove", "digits-mlp", "--out", str(out), "--table-bits", "3,4", "--no-lossless-search"]) == 0
    return out


def test_report_lists_every_check_with_a_verdict_and_its_plots(report) -> None:  # type: ignore[no-untyped-def]
    text = (report / "report.md").read_text()
    results = json.loads((report / "results.json").read_text())
    assert [c["number"] for c in results["checks"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    for check in results["checks"]:
        assert f"## {check['number']}. {check['title']}: {check['verdict']}" in text
    for name in ("check1_prediction", "check2_spectra", "check3_major_axis", "check4_complementary",
                 "check5_lossless", "check6_additivity", "equal_size"):
        path = report / f"{name}.png"
        assert path.stat().st_size > 1000 and f"]({name}.png)" in text
    assert "## Equal-size comparison" in text
    labels = {row["label"] for row in results["equal_size"]}
    assert {"uniform 3-bit", "hawq-v3", "cet", "cet-eigen", "cet-trace", "cet-nograd"} <= labels


def test_claims_that_hold_on_digits_mlp(report) -> None:  # type: ignore[no-untyped-def]
    checks = {c["number"]: c for c in json.loads((report / "results.json").read_text())["checks"]}
    # measured on the shipped digits-mlp seed 0 (docs/results/cet-checks/digits-mlp): these hold with margin
    assert checks[1]["data"]["correlation"] > 0.9
    assert checks[3]["data"]["ordered_fraction"] == 1.0
    assert checks[7]["data"]["agree"] and checks[7]["data"]["bounds_ok"]
    # identical plans are ties, never wins
    assert checks[7]["data"]["wins"] + checks[7]["data"]["ties"] + checks[7]["data"]["losses"] == \
        checks[7]["data"]["comparisons"]
    # check 2 classifies only resolved layers: fc3 (640 weights) gets its dense float64 block
    assert checks[2]["data"]["classified"] >= 1


def test_bad_check_numbers_are_refused(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["prove", "digits-mlp", "--out", str(tmp_path), "--checks", "9"]) == 2
    assert "--checks" in capsys.readouterr().err


@pytest.mark.parametrize("flags, field", [(["--k", "0"], "--k"), (["--k", "8", "--lanczos-iterations", "10"],
                                                                    "--lanczos-iterations")])
def test_lanczos_settings_that_cannot_work_are_refused(tmp_path, capsys, flags, field) -> None:  # type: ignore[no-untyped-def]
    assert main(["prove", "digits-mlp", "--out", str(tmp_path), *flags]) == 2
    assert field in capsys.readouterr().err


def no_validation_spec():  # type: ignore[no-untyped-def]
    """A tiny classifier whose spec has calibration and test data but no validation batches."""
    import torch
    from torch import nn

    from cetopt.modelspec import ModelSpec

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    reference = model(x).argmax(1).detach()

    def agreement(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"agreement": float((m(x).argmax(1) == reference).float().mean())}

    return ModelSpec(name="no-validation", model=model, calibration=[(x[:32], y[:32]), (x[32:], y[32:])],
                     evaluate=agreement, loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))


def test_without_validation_batches_the_lossless_search_is_skipped_not_fatal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cetopt.theory.prove import ProveSettings, prove

    results = prove(f"{__file__}:no_validation_spec", tmp_path, checks=(2,),
                    settings=ProveSettings(table_bits=(3,), k=2, lanczos_iterations=8))
    assert [r.number for r in results] == [2]
    report = (tmp_path / "report.md").read_text()
    assert "Not searched: no-validation has no validation batches" in report
    assert "| 3 | cet |" in report  # the equal-size table itself ran
    assert json.loads((tmp_path / "results.json").read_text())["smallest_lossless"] == {}


def test_a_stopped_run_resumes_from_its_checkpoints(report, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from cetopt.theory import prove as prove_module

    out = tmp_path / "again"
    shutil.copytree(report, out)
    before = json.loads((out / "results.json").read_text())

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("recomputed although a checkpoint with the same inputs exists")

    for number in (1, 6):
        monkeypatch.setitem(prove_module.CHECKS, number, boom)
    monkeypatch.setattr(prove_module, "equal_size_table", boom)
    assert main(["prove", "digits-mlp", "--out", str(out), "--checks", "1,6", "--table-bits", "4",
                 "--no-lossless-search"]) == 0
    after = json.loads((out / "results.json").read_text())
    assert after["resumed"] == ["check 1", "check 6", "the 4-bit table rows"]
    old = {c["number"]: c for c in before["checks"]}
    for check in after["checks"]:
        assert {k: check[k] for k in ("title", "verdict", "value", "tolerance")} == \
            {k: old[check["number"]][k] for k in ("title", "verdict", "value", "tolerance")}
    assert after["equal_size"] == [r for r in before["equal_size"] if r["budget_bits"] == 4]
    text = (out / "report.md").read_text()
    assert "read from the checkpoints of an earlier run" in text and "## 1. " in text and "## 2. " not in text
    assert after["finished"] is True
    # stopped at check 5: results.json keeps check 1 and says the run is not finished
    monkeypatch.setitem(prove_module.CHECKS, 5, boom)
    (out / "checkpoints" / "check5.json").unlink()  # as if the earlier run had stopped before check 5
    with pytest.raises(AssertionError, match="recomputed"):
        main(["prove", "digits-mlp", "--out", str(out), "--checks", "1,5", "--table-bits", ""])
    stopped = json.loads((out / "results.json").read_text())
    assert stopped["finished"] is False and [c["number"] for c in stopped["checks"]] == [1]
    assert "Checks still to run: [5]" in stopped["not_finished"]
    # --fresh recomputes: the stand-ins are called and fail loudly
    with pytest.raises(AssertionError, match="recomputed"):
        main(["prove", "digits-mlp", "--out", str(out), "--checks", "1", "--table-bits", "", "--fresh"])


def test_checkpoints_of_other_inputs_are_not_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cetopt.theory.allocation import PlanMeasurement
    from cetopt.theory.checkpoint import ProveCheckpoints

    row = PlanMeasurement("cet", 3.0, 3.0, -0.5, 0.25, 0.9, "optimal", float("nan"), float("nan"), {"fc1": 3})
    ProveCheckpoints(tmp_path, {"model": "m", "k": 16}).save_table_rows(3, [row])
    assert ProveCheckpoints(tmp_path, {"model": "m", "k": 8}).table_rows(3) is None
    (back,) = ProveCheckpoints(tmp_path, {"model": "m", "k": 16}).table_rows(3)
    assert back.bits == {"fc1": 3} and back.predicted == -0.5 and back.packed_ratio != back.packed_ratio  # NaN kept
    (tmp_path / "checkpoints" / "table3.json").write_text("{ not json")
    assert ProveCheckpoints(tmp_path, {"model": "m", "k": 16}).table_rows(3) is None


def test_table_rows_of_other_test_data_are_not_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The table reports test metrics: rows measured on other test data are recomputed, while the checks (which
    never look at the test data) are still reused."""
    from cetopt.theory.allocation import PlanMeasurement
    from cetopt.theory.checkpoint import ProveCheckpoints
    from cetopt.theory.report import CheckResult, Verdict

    row = PlanMeasurement("cet", 3.0, 3.0, -0.5, 0.25, 0.9, "optimal", float("nan"), float("nan"), {"fc1": 3})
    check = CheckResult(1, "t", "c", "s", "v", "tol", Verdict.PASS)
    old = ProveCheckpoints(tmp_path, {"model": "m"}, test_key={"data": "32 test sentences"})
    old.save_table_rows(3, [row])
    old.save_check(check)
    new = ProveCheckpoints(tmp_path, {"model": "m"}, test_key={"data": "432 test sentences"})
    assert new.table_rows(3) is None
    assert new.check(1) is not None and new.check(1).verdict is Verdict.PASS


def test_a_check_keyed_by_its_own_setting_is_recomputed_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Check 5 with another number of stochastic roundings is computed again; the other checks are reused."""
    from cetopt.theory.checkpoint import ProveCheckpoints
    from cetopt.theory.report import CheckResult, Verdict

    eight = ProveCheckpoints(tmp_path, {"model": "m"}, check_keys={5: {"variants": 8}})
    for number in (1, 5):
        eight.save_check(CheckResult(number, "t", "c", "s", "v", "tol", Verdict.PASS))
    two = ProveCheckpoints(tmp_path, {"model": "m"}, check_keys={5: {"variants": 2}})
    assert two.check(5) is None and two.check(1) is not None
    assert eight.check(5) is not None


def test_prove_reports_what_dominates_each_cost_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cetopt.theory.prove import ProveSettings, prove

    prove(f"{__file__}:no_validation_spec", tmp_path, checks=(2,),
          settings=ProveSettings(table_bits=(3,), k=2, lanczos_iterations=8))
    effects = json.loads((tmp_path / "results.json").read_text())["cost_signal_effects"]
    cet = effects["cet [nearest rounding, none grid]"]
    assert set(cet) == {"linear", "quadratic"} and all(v >= 0 for v in cet.values())
    assert effects["hawq-v3 [nearest rounding, none grid]"] == pytest.approx({"trace_per_weight": 1.0})
    report = (tmp_path / "report.md").read_text()
    assert "## What dominates each cost model's cost" in report and "(dominant: " in report

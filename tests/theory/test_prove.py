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
    from cetopt.theory.prove import prove

    results = prove(f"{__file__}:no_validation_spec", tmp_path, checks=(2,), table_bits=(3,), k=2,
                    lanczos_iterations=8)
    assert [r.number for r in results] == [2]
    report = (tmp_path / "report.md").read_text()
    assert "Not searched: no-validation has no validation batches" in report
    assert "| 3 | cet |" in report  # the equal-size table itself ran
    assert json.loads((tmp_path / "results.json").read_text())["smallest_lossless"] == {}

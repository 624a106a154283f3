"""``cetopt prove MODEL --claims ...``: the seed papers' claims as checks that can fail. A real run on the smallest
zoo model writes verdicts that the judges give again from the saved measurements; a false case fed through the
command (a headline walk whose chosen plans lose test accuracy, a 4-bit series below FP) is reported as fail; bad
input is refused naming the flag, before anything is measured. The judges' own false cases are in
test_headline.py, test_llc_rank.py, test_lowrank_joint.py and test_xint.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cetopt.cli import main
from cetopt.errors import ProblemError
from cetopt.theory.report import Verdict
from cetopt.theory.seed_claims import ClaimSettings, check_claims, command

ALL = "xint,headline,llc-rank,lowrank"


def test_a_tiny_real_run_writes_the_verdicts_its_measurements_give(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from cetopt.theory.headline import BudgetPoint, SeedWalk, judge_headline
    from cetopt.theory.xint_seeds import analyse_model, claim_verdicts
    from cetopt.theory.seed_verdicts import overall_verdict

    out = tmp_path / "claims"
    code = main(["--threads", "1", "prove", "digits-mlp", "--claims", ALL, "--seeds", "0,1", "--budgets", "4,3",
                 "--xint-bits", "4", "--xint-terms", "1,2", "--format", "json", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    data = json.loads((out / "results.json").read_text())
    assert data["finished"] and data["seeds"] == [0, 1] and len(data["code_version"]["sha256"]) == 64
    assert [c["name"] for c in printed["claims"]] == ALL.split(",")
    assert {c["name"]: c["verdict"] for c in printed["claims"]} == {k: v["verdict"] for k, v in data["claims"].items()}
    # each verdict again, from the saved measurements
    walks = [SeedWalk(**{**{k: v for k, v in w.items() if k in SeedWalk.__dataclass_fields__},
                         "points": tuple(BudgetPoint(**p) for p in w["points"])}) for w in data["claims"]["headline"]["walks"]]
    assert [p.budget_bits for p in walks[0].points] == [4.0, 3.0]
    assert data["claims"]["headline"]["verdict"] == judge_headline(walks).verdict.value
    xint = data["claims"]["xint"]
    again = analyse_model(xint["runs"], [4], [1, 2])
    assert xint["verdict"] == overall_verdict(claim_verdicts(again))
    assert [r["seed"] for r in xint["runs"]] == [0, 1]
    llc = data["claims"]["llc-rank"]
    assert llc["verdict"] == llc["verdicts"]["predicted"]["verdict"]
    lowrank = data["claims"]["lowrank"]
    assert lowrank["verdict"] == overall_verdict([v["verdict"] for v in lowrank["verdicts"].values()])
    assert set(lowrank["verdicts"]) == {"0.5/uniform ranks", "0.5/knapsack ranks"}
    text = (out / "report.md").read_text()
    assert command("digits-mlp", ALL.split(","), ClaimSettings(seeds=(0, 1), budgets=(4.0, 3.0), bits=(4,),
                                                               terms=(1, 2))) in text
    for name in ALL.split(","):
        assert f"## {name}: {data['claims'][name]['verdict']}" in text


def _drop_walk(spec: Any, budgets: Any, *, model: str | None = None, seed: int = 0) -> Any:
    """A walk where the chosen 12x plan keeps validation accuracy but loses 5 test points: the claim is false."""
    from cetopt.theory.headline import BudgetPoint, SeedWalk

    point = BudgetPoint(budget_bits=2.5, avg_bits=2.5, packed_ratio=12.0, weight_ratio=12.8, validation_accuracy=1.0,
                        test_accuracy=0.92 + 0.001 * seed)
    return SeedWalk(model=model or spec.name, seed=seed, fp_validation_accuracy=1.0, fp_test_accuracy=0.97,
                    points=(point,), chosen=0, first_drop=0)


def test_a_false_headline_fails_through_the_command(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    import cetopt.theory.headline as headline

    monkeypatch.setattr(headline, "walk_budgets", _drop_walk)
    assert main(["prove", "digits-mlp", "--claims", "headline", "--seeds", "0,1,2", "--out", str(tmp_path)]) == 0
    assert "headline: fail: " in capsys.readouterr().out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["claims"]["headline"]["verdict"] == "fail"
    assert "## headline: fail" in (tmp_path / "report.md").read_text()


def _below_fp_run(name: str, seed: int, bits: Any, terms: Any) -> dict[str, Any]:
    """A 4-bit series that converges, keeps the axioms, and is 2 points BELOW FP at every K: 'above FP' is false."""
    fp = 0.9 + 0.01 * seed
    points = [{"bits": 4, "terms": k, "bits_per_weight": 4 * k, "weight_rel_error": 0.1 / 10 ** k, "max_rate": 0.1,
               "output_rel_error": 0.1 / 10 ** k, "accuracy": fp - 0.02 - 0.001 * seed, "loss": 0.1,
               "layer_gap": 1e-7, "model_sum_rel_error": 0.05, "model_sum_accuracy": fp, "model_sum_vs_first": 0.0,
               "parallel_gap": 0.0, "plain_accuracy": fp, "plain_loss": 0.1} for k in terms]
    return {"model": name, "seed": seed, "fp_accuracy": fp, "fp_loss": 0.1, "n_test": 360, "weights": None,
            "points": points, "axioms": [{"op": "AbelianAdd", "errors": {"identity": 0.0}, "failed": []},
                                         {"op": "AbelianMul", "errors": {"identity": 0.0}, "failed": []}]}


def test_a_series_below_fp_fails_the_xint_claim(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    import cetopt.theory.xint_seeds as xint_seeds
    from cetopt.theory.seed_claim_runs import run_claims

    monkeypatch.setattr(xint_seeds, "run_seed", _below_fp_run)
    (result,) = run_claims("digits-mlp", tmp_path, ["xint"], settings=ClaimSettings(seeds=(0, 1, 2), bits=(4,),
                                                                                     terms=(1, 2)))
    assert result.verdict is Verdict.FAIL
    assert result.data["verdicts"] == {"convergence_verdict": "pass", "axioms": "pass", "granularity": "pass",
                                       "above_fp_verdict": "fail"}


@pytest.mark.parametrize("claims, settings, flag", [
    (["nosuch"], ClaimSettings(), "--claims"),
    ([], ClaimSettings(), "--claims"),
    (["xint"], ClaimSettings(seeds=(0, 0)), "--seeds"),
    (["headline"], ClaimSettings(budgets=(4.0, 0.0)), "--budgets"),
    (["lowrank"], ClaimSettings(fractions=(1.5,)), "--fractions"),
    (["xint"], ClaimSettings(bits=(1,)), "--xint-bits/--xint-terms"),
])
def test_bad_settings_are_refused_naming_the_flag(claims: list[str], settings: ClaimSettings, flag: str) -> None:
    with pytest.raises(ProblemError) as err:
        check_claims("digits-mlp", claims, settings)
    assert err.value.field == flag


def test_claims_a_model_cannot_run_are_refused_before_measuring() -> None:
    with pytest.raises(ProblemError, match="labelled test set") as err:
        check_claims("mobilenetv2", ["xint"], ClaimSettings(seeds=(0,)))
    assert err.value.field == "--claims"
    with pytest.raises(ProblemError, match="not a zoo model") as err:
        check_claims("test_cli_json:tiny", ["llc-rank"], ClaimSettings(seeds=(0, 1)))
    assert err.value.field == "--seeds"


@pytest.mark.parametrize("argv, named", [
    (["--claims", "nosuch"], "--claims"),
    (["--claims", "headline", "--k", "4"], "--k"),  # a geometry flag beside --claims: not silently ignored
    (["--claims", "headline", "--fresh"], "--fresh"),
    (["--seeds", "0,1"], "--seeds"),  # a claim flag without --claims
    (["--claims", "lowrank", "--fractions", "a"], "--fractions"),
])
def test_the_command_exits_2_naming_the_flag(tmp_path: Path, capsys, argv: list[str], named: str) -> None:  # noqa: ANN001
    assert main(["prove", "digits-mlp", *argv, "--out", str(tmp_path / "x")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_headline_on_a_model_with_nothing_to_pick_by_exits_2(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """A user spec without validation batches: headline has nothing to choose its plan on (the test set never
    chooses); the command names --claims and says to drop headline, before any plan is built."""
    assert main(["prove", "test_cli_json:tiny", "--claims", "headline", "--seeds", "0", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--claims" in err and "no validation batches" in err and "drop headline" in err
    assert not (tmp_path / "x").exists()


def test_the_compact_form_runs_as_a_claim_and_its_verdict_is_its_walks_judged_again(tmp_path: Path) -> None:
    """`--claims lowrank-compact` writes the walks it measured; judging them again gives the verdict it printed."""
    from dataclasses import fields

    from cetopt.theory.lowrank_compact import CompactPoint, CompactWalk, judge_compact

    out = tmp_path / "compact"
    code = main(["--threads", "1", "prove", "digits-mlp", "--claims", "lowrank-compact", "--seeds", "0,1",
                 "--fractions", "0.8,0.4", "--out", str(out)])
    assert code == 0
    claim = json.loads((out / "results.json").read_text())["claims"]["lowrank-compact"]
    assert claim["fractions"] == [0.8, 0.4] and [w["seed"] for w in claim["walks"]] == [0, 1]
    names = {f.name for f in fields(CompactWalk)}
    walks = [CompactWalk(**{**{k: v for k, v in w.items() if k in names}, "skipped": tuple(w["skipped"]),
                            "points": tuple(CompactPoint(**p) for p in w["points"])}) for w in claim["walks"]]
    again = judge_compact(walks)
    assert claim["verdict"]["verdict"] == again.verdict.value and claim["verdict"]["n_seeds"] == 2
    assert f"## lowrank-compact: {again.verdict.value}" in (out / "report.md").read_text()

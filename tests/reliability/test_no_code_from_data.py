"""No file names code: a plan's ``model``, an artefact manifest's ``target`` and a problem's
``metadata.model_target`` are shown and compared, never imported. Each hostile file below names a Python file
that writes a marker when imported; the commands must refuse (exit 2, the flag to pass named) and the marker
must never appear. Zoo names (a registry lookup) and targets the user types still work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("safetensors")

from cetopt.artifact import MANIFEST_FILE, write_artifact  # noqa: E402
from cetopt.bench.cell import Cell, run_cell  # noqa: E402
from cetopt.cli import main  # noqa: E402
from cetopt.errors import ProblemError  # noqa: E402
from cetopt.modelspec import choose_model  # noqa: E402
from cetopt.problem.io import save_problem  # noqa: E402
from cetopt.problem.synthetic import synthetic_problem  # noqa: E402
from cetopt.quant.plan import Plan  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


def hostile_module(folder: Path) -> tuple[Path, Path]:
    """A model file that leaves a marker when imported (what running code from a data file would do)."""
    marker = folder / "IMPORTED"
    code = (f"open({str(marker)!r}, 'w').write('ran')\n"
            f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom test_artifact import small_spec\n\n"
            "def spec():\n    return small_spec()\n")
    path = folder / "evil_model.py"
    path.write_text(code)
    return path, marker


def test_apply_never_imports_the_plans_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    evil, marker = hostile_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    for recorded in (f"{evil}:spec", "evil_model.py:spec", "evil_model:spec"):
        Plan(bits={"0": 4, "4": 3}, model=recorded).save(tmp_path / "plan.json")
        assert main(["apply", "plan.json", "--out", "art"]) == 2
        err = capsys.readouterr().err
        assert "--model" in err and "never imports" in err and recorded in err
        assert not marker.exists() and not (tmp_path / "art").exists()
    sys.modules.pop("evil_model", None)


def test_evaluate_never_imports_the_manifests_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(TESTS))
    try:
        from test_artifact import small_spec
    finally:
        sys.path.remove(str(TESTS))
    evil, marker = hostile_module(tmp_path)
    write_artifact(small_spec(), Plan(bits={"0": 4, "4": 3}), tmp_path / "art", target=f"{evil}:spec",
                   require_fingerprint=False)
    assert json.loads((tmp_path / "art" / MANIFEST_FILE).read_text())["target"] == f"{evil}:spec"
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "art"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and f"{evil}:spec" in err
    assert not marker.exists()
    (tmp_path / "good_model.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                            "from test_artifact import small_spec\n\ndef spec():\n    return small_spec()\n")
    assert main(["evaluate", "art", "--model", "good_model.py:spec"]) == 2  # differs from the recorded target
    assert "--allow-model-mismatch" in capsys.readouterr().err
    assert main(["evaluate", "art", "--model", "good_model.py:spec", "--allow-model-mismatch", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == 2
    assert not marker.exists()


def test_choose_model_rules() -> None:
    assert choose_model(None, "digits-mlp", what="plan") == "digits-mlp"  # a zoo name: registry lookup only
    assert choose_model("digits-mlp", "digits-mlp", what="plan") == "digits-mlp"
    for recorded in ("x.py:spec", "os:system", "", None, 7):
        with pytest.raises(ProblemError, match="--model"):
            choose_model(None, recorded, what="plan")
    with pytest.raises(ProblemError, match="differs"):
        choose_model("digits-cnn", "digits-mlp", what="plan")
    warnings: list[str] = []
    assert choose_model("digits-cnn", "digits-mlp", what="plan", allow_mismatch=True,
                        log=warnings.append) == "digits-cnn"
    assert warnings and "differs" in warnings[0]


def test_bench_never_imports_a_problems_model_target(tmp_path: Path) -> None:
    evil, marker = hostile_module(tmp_path)
    base = synthetic_problem(4, n_choices=3, seed=0)
    problem = base.with_changes(metadata={**base.metadata, "model_target": f"{evil}:spec"})
    save_problem(problem, tmp_path / "p.json")
    hawq = run_cell(Cell(problem=str(tmp_path / "p.json"), solver="hawq-v3", budget_avg_bits=4.0))
    assert hawq["status"] == "skipped" and "--model" in hawq["message"] and str(evil) in hawq["message"]
    solved = run_cell(Cell(problem=str(tmp_path / "p.json"), solver="dp", budget_avg_bits=4.0))
    assert solved["status"] == "optimal" and solved["metric"] is None and "--model" in solved["message"]
    assert not marker.exists()


def test_bench_measures_a_model_the_user_names(tmp_path: Path) -> None:
    """The same problem, with its target typed by the user (cetopt bench --model): loaded and measured."""
    sys.path.insert(0, str(TESTS))
    try:
        from test_artifact import small_spec
    finally:
        sys.path.remove(str(TESTS))
    from cetopt.problem.model import Budget
    from cetopt.workflow import build_for

    model_file = tmp_path / "user_model.py"
    model_file.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom test_artifact import small_spec\n\n"
                          "def spec():\n    return small_spec()\n")
    target = f"{model_file}:spec"
    problem = build_for(small_spec(), method="cet", bits=(2, 4, 8), budget=Budget(avg_bits=4), target=target).problem
    assert problem.metadata["model_target"] == target
    save_problem(problem, tmp_path / "p.json")
    skipped = run_cell(Cell(problem=str(tmp_path / "p.json"), solver="dp", budget_avg_bits=4.0))
    assert skipped["metric"] is None and "--model" in skipped["message"]
    measured = run_cell(Cell(problem=str(tmp_path / "p.json"), solver="dp", budget_avg_bits=4.0, models=(target,)))
    assert measured["metric_name"] == "agreement" and measured["metric"] is not None

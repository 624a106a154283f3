"""``--format json`` on every command: each subcommand, run in json mode on small inputs, prints exactly one JSON
document on stdout (its readable lines go to stderr), and the document holds the result the command wrote."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cetopt.cli import build_parser, main

USER = "test_cli_json:tiny"


def tiny() -> object:
    """A 6-8-3 MLP with labels and an accuracy on held-out rows (cetopt levels compares modes by a metric)."""
    import torch
    from torch import nn

    from cetopt import ModelSpec

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    return ModelSpec(name="tiny", model=model, calibration=[x[:32], x[32:64]],
                     evaluate=lambda m: {"accuracy": float((m(x[64:]).argmax(1) == y[64:]).float().mean())})


def subcommands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    """Run ``cetopt ARGV --format json``: exit 0 and stdout one JSON document (returned)."""
    capsys.readouterr()
    code = main([*argv, "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, f"cetopt {' '.join(argv)} exited {code}: {out.err[-2000:]}"
    return json.loads(out.out)  # raises on a second document or on any human line left on stdout


def test_every_command_answers_format_json(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(root / "tests"))
    monkeypatch.chdir(tmp_path)
    ran: dict[str, object] = {}
    synthetic = tmp_path / "synthetic.json"
    ran["make-problem"] = run_json(capsys, "make-problem", "synthetic", "--layers", "4", "--choices", "3",
                                   "--out", str(synthetic))
    assert ran["make-problem"]["layers"] == 4 and synthetic.exists()
    ran["validate"] = run_json(capsys, "validate", str(synthetic))
    assert ran["validate"][0]["layers"] == 4
    ran["solvers"] = run_json(capsys, "solvers")
    assert {"dp", "greedy"} <= {s["backend"] for s in ran["solvers"]}
    ran["schema"] = run_json(capsys, "schema")
    assert "properties" in ran["schema"]
    ran["solve"] = run_json(capsys, "solve", str(synthetic), "--solver", "dp")
    ran["compare"] = run_json(capsys, "compare", str(synthetic), "--solvers", "dp,greedy")
    assert [r["solver"] for r in ran["compare"]] == ["dp", "greedy"]

    problem, plan, art = tmp_path / "problem.json", tmp_path / "plan.json", tmp_path / "art"
    ran["extract"] = run_json(capsys, "extract", USER, "--bits", "2,4,8", "--avg-bits", "4", "--out", str(problem))
    assert ran["extract"]["layers"] == len(json.loads(problem.read_text())["layers"]) == 2
    assert main(["solve", str(problem), "--solver", "dp", "--out", str(plan)]) == 0
    ran["plan"] = run_json(capsys, "plan", USER, "--bits", "2,4,8", "--avg-bits", "4", "--pool", "", "--no-backends",
                           "--out", str(tmp_path / "plan2.json"))
    written = json.loads((tmp_path / "plan2.json").read_text())
    assert ran["plan"]["selected"] == written["extra"]["selected"] and ran["plan"]["packed_bytes"] > 0
    ran["apply"] = run_json(capsys, "apply", str(plan), "--model", USER, "--out", str(art))
    assert ran["apply"]["file_bytes"] == (art / "model.safetensors").stat().st_size
    ran["evaluate"] = run_json(capsys, "evaluate", str(art), "--model", USER)
    if _has("onnx") and _has("onnxruntime"):
        ran["export"] = run_json(capsys, "export", str(art), "--model", USER, "--out", str(tmp_path / "m.onnx"))
        assert ran["export"]["file_bytes"] == (tmp_path / "m.onnx").stat().st_size
    else:
        ran["export"] = "skipped: onnx not installed"
    ran["demo"] = run_json(capsys, "demo", USER, "--avg-bits", "4")
    assert any(p["plan"] == "cet/dp" and p["measured_dL"] is not None for p in ran["demo"]["plans"])
    ran["levels"] = run_json(capsys, "levels", USER, "--budgets", "4", "--out", str(tmp_path / "levels"))
    assert ran["levels"]["points"]
    ran["prove"] = run_json(capsys, "prove", USER, "--checks", "1", "--k", "1", "--lanczos-iterations", "2",
                            "--table-bits", "", "--no-lossless-search", "--out", str(tmp_path / "prove"))
    assert [c["number"] for c in ran["prove"]["checks"]] == [1]
    ran["bench"] = run_json(capsys, "bench", "--problems", str(synthetic), "--solvers", "dp,greedy", "--budgets", "3",
                            "--baselines", "", "--no-measure", "--no-plots", "--out", str(tmp_path / "bench"))
    assert ran["bench"]["ran"] == 2
    assert set(ran) == subcommands(), f"commands without a json run here: {subcommands() - set(ran)}"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_bench_solvers_comma_separated_and_the_old_spaced_form_warns(caplog: pytest.LogCaptureFixture) -> None:
    from cetopt.cli.reports import solver_list

    with caplog.at_level(logging.WARNING):
        assert solver_list(["dp,greedy", "solvers/*.toml"]) == ["dp", "greedy", "solvers/*.toml"]
    assert "deprecated" in caplog.text and "--solvers A,B" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert solver_list(["dp,greedy"]) == ["dp", "greedy"] and solver_list(None) == []
    assert not caplog.text


def test_export_format_onnx_still_names_the_file_format(caplog: pytest.LogCaptureFixture) -> None:
    args = build_parser().parse_args(["export", "art", "--model", "m.py:f", "--out", "m.onnx", "--format", "onnx"])
    assert args.format == "onnx" and args.to == "onnx"  # cmd_export warns and writes ONNX with table output
    assert build_parser().parse_args(["export", "art", "--model", "m.py:f", "--out", "m.onnx"]).format == "table"


def test_help_describes_the_tool_in_whole_sentences() -> None:
    description = build_parser().description
    assert description.startswith("Curvature-driven") and description.endswith(".")

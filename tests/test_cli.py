"""The command line: exit codes, JSON output on stdout only, budget overrides."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cetopt.cli import main

HAWQ = "problems/hawq-v3/resnet18-size0.5.json"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cetopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_solve_json_prints_one_object_with_the_documented_keys(root: Path) -> None:
    out = run_cli("solve", HAWQ, "--solver", "dp", "--format", "json", cwd=root)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("bits", "objective", "size_bits", "status", "bound", "gap", "seconds", "solver"):
        assert key in data
    assert data["status"] == "optimal" and len(data["bits"]) == 19


def test_infeasible_budget_exits_1_and_names_the_smallest_feasible_budget(root: Path) -> None:
    out = run_cli("solve", HAWQ, "--solver", "greedy", "--avg-bits", "3", "--format", "json", cwd=root)
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["status"] == "infeasible"
    assert "smallest feasible size" in data["message"] and "avg_bits 4" in data["message"]


def test_bad_input_exits_2_with_the_field(tmp_path: Path, root: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "cetopt.problem/1", "name": "x", "layers": [{"name": "a", "params": 0, '
                   '"choices": [{"bits": 4, "loss": 0}]}], "budget": {"avg_bits": 4}}')
    out = run_cli("solve", str(bad), cwd=root)
    assert out.returncode == 2
    assert "layers[0].params" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("solve", HAWQ, "--solver", "nope", cwd=root)
    assert out.returncode == 2 and "unknown solver" in out.stderr


def test_solver_config_and_options_flags(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "result.json"
    code = main(["solve", HAWQ, "--solver-config", "solvers/ortools-10s.toml", "-o", "workers=2",
                 "--format", "json", "--out", str(target)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["solver"] == "ortools-10s" and printed["options"]["workers"] == 2
    written = json.loads(target.read_text())  # --out writes the plan (cetopt.plan/2), with the result inside
    assert written["format"] == "cetopt.plan/2" and written["extra"]["result"]["objective"] == printed["objective"]
    assert {name: entry["bits"] for name, entry in written["layers"].items()} == printed["bits"]


def test_minimize_size_override(root: Path) -> None:
    out = run_cli("solve", HAWQ, "--solver", "highs", "--minimize", "size", "--max-loss", "0.2", "--format", "json",
                  cwd=root)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["loss"] <= 0.2 + 1e-9 and data["objective"] == data["size_bits"]


def test_compare_validate_solvers_schema(root: Path) -> None:
    for args in (("compare", HAWQ, "--solvers", "dp,greedy"), ("validate", HAWQ), ("solvers",), ("schema",)):
        out = run_cli(*args, cwd=root)
        assert out.returncode == 0, (args, out.stderr)
        assert out.stdout.strip()


def user_model() -> dict:
    """A user's model for `cetopt extract tests.test_cli:user_model` (importable as a module:function)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    batches = [(torch.randn(32, 6), torch.randint(0, 3, (32,)))]
    return {"model": model, "loss_fn": lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), "batches": batches,
            "name": "user-mlp"}


def test_extract_a_users_module_function(tmp_path: Path, root: Path) -> None:
    out = tmp_path / "user.json"
    env_code = ("import sys; sys.path.insert(0, 'tests'); from cetopt.cli import main; "
                f"sys.exit(main(['extract', 'test_cli:user_model', '--bits', '2,4,8', '--out', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["name"].startswith("user-mlp-") and [l["name"] for l in data["layers"]] == ["0", "2"]  # <model>-<method>
    assert [c["bits"] for c in data["layers"][0]["choices"]] == [2, 4, 8]
    # the coverage report: printed, and recorded per layer with the weights split (issue 36)
    assert "coverage: quadratic forms: 2 of 2 layers prefix cached, 2 by forward mode" in done.stdout
    coverage = data["metadata"]["coverage"]
    assert set(coverage["layers"]) == {"0", "2"} and coverage["weights"]["kept_count"] == 8 + 3
    bad = run_cli("extract", "nosuchmodule:f", "--out", str(out), cwd=root)
    assert bad.returncode == 2 and "cannot import module 'nosuchmodule'" in bad.stderr


def test_extract_unknown_model_answers_before_torch_loads(tmp_path: Path, root: Path) -> None:
    """`cetopt extract nosuch`: exit 2 and the zoo's names, with neither torch nor numpy imported (so it
    answers in well under a second; 0.35 s measured on a loaded 2-core machine)."""
    code = ("import sys; from cetopt.cli import main; rc = main(['extract', 'nosuch', '--out', 'x.json']); "
            "print(rc, 'torch' in sys.modules, 'numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert "unknown model 'nosuch'" in done.stderr and "digits-cnn" in done.stderr and "mobilenetv2" in done.stderr


def test_solve_out_writes_a_plan_and_compare_shows_unused_budget(tmp_path: Path, root: Path) -> None:
    from cetopt.quant.plan import Plan

    problem = tmp_path / "p.json"
    assert main(["make-problem", "synthetic", "--layers", "6", "--out", str(problem)]) == 0
    assert main(["solve", str(problem), "--solver", "dp", "--out", str(tmp_path / "plan.json")]) == 0
    plan = Plan.load(tmp_path / "plan.json")
    assert plan.extra["solver"] == "dp" and len(plan.layers) == 6
    out = run_cli("compare", str(problem), "--solvers", "dp", "--avg-bits", "3", cwd=root)
    assert out.returncode == 0 and "unused_avg_bits" in out.stdout and "packed_ratio" in out.stdout


def test_extract_with_mse_clipping_records_the_quantiser_and_the_plan_uses_it(tmp_path: Path, root: Path) -> None:
    from cetopt.quant.plan import Plan

    paths = {clip: tmp_path / f"user-{clip}.json" for clip in ("none", "mse")}
    for clip, path in paths.items():
        code = ("import sys; sys.path.insert(0, 'tests'); from cetopt.cli import main; "
                f"sys.exit(main(['extract', 'test_cli:user_model', '--bits', '2,4', '--clip', {clip!r}, '--out', "
                f"{str(path)!r}]))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    data = {clip: json.loads(path.read_text()) for clip, path in paths.items()}
    assert data["mse"]["metadata"]["quantizer"]["clip"] == "mse" and data["none"]["metadata"]["quantizer"]["clip"] == "none"
    # MSE clipping shrinks each candidate's error energy, so the 2-bit predicted loss changes
    assert data["mse"]["layers"][0]["choices"][0]["loss"] != data["none"]["layers"][0]["choices"][0]["loss"]
    plan = tmp_path / "plan.json"
    assert main(["solve", str(paths["mse"]), "--solver", "dp", "--avg-bits", "3", "--out", str(plan)]) == 0
    assert Plan.load(plan).quantizer.clip == "mse"
    bad = run_cli("extract", "digits-mlp", "--clip", "max", "--out", str(plan), cwd=root)
    assert bad.returncode == 2 and "--clip" in bad.stderr


def test_extract_method_choices_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """An explicit --method is checked against the registry (a TypeError traceback before: the choices object's
    __contains__ and __iter__ had lost an underscore); an unknown one exits 2 listing the cost models."""
    from cetopt.cli import build_parser

    args = build_parser().parse_args(["extract", "digits-mlp", "--method", "cet-upper", "--out", "x.json"])
    assert args.method == "cet-upper"
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["extract", "digits-mlp", "--method", "nosuch", "--out", "x.json"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuch'" in err and "cet-shrink" in err and "hawq-v3" in err


def test_version_and_global_options_after_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from cetopt import __version__
    from cetopt.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and __version__ in capsys.readouterr().out
    parser = build_parser()
    assert parser.parse_args(["solve", "p.json", "--threads", "3"]).threads == 3
    assert parser.parse_args(["--threads", "2", "solve", "p.json"]).threads == 2  # not reset by the subcommand
    assert parser.parse_args(["solve", "p.json"]).threads is None
    assert main(["solvers", "--threads", "0"]) == 2  # validated wherever it is given
    assert "--threads" in capsys.readouterr().err


def test_every_command_that_takes_a_budget_takes_the_same_budget_flags() -> None:
    """One declaration and one validator (cetopt.cli.args.add_budget_flags) for solve, compare, extract, plan and
    demo; extract/plan/demo read the given flags into the budget they attach."""
    from cetopt.cli import build_parser
    from cetopt.cli.args import AVG_BITS, BUDGET_FLAGS, budget_from_args
    from cetopt.problem.model import Budget

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, argv in {"solve": ["p.json"], "compare": ["p.json"], "extract": ["m", "--out", "x"],
                       "plan": ["m", "--out", "x"], "demo": ["m"]}.items():
        flags = {a.dest: a for a in commands[name]._actions if a.option_strings}
        assert {dest for dest, _ in BUDGET_FLAGS} <= set(flags), name
        assert flags["avg_bits"].type is AVG_BITS, name
        args = parser.parse_args([name, *argv, "--size-bytes", "1000", "--max-loss", "0.5"])
        assert budget_from_args(args) == Budget(size_bytes=1000, max_loss=0.5), name
        assert budget_from_args(parser.parse_args([name, *argv])) is None, name
        with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args([name, *argv, "--avg-bits", "0"])
        assert stop.value.code == 2, name


@pytest.mark.parametrize("flags, named", [(["--bits", "0,4"], "--bits"), (["--group-sizes=-1"], "--group-sizes"),
                                          (["--bits", "2,x"], "--bits"), (["--rounding", "nearest,up"], "--rounding")])
def test_a_bad_recipe_flag_is_named_before_any_work(flags: list[str], named: str) -> None:
    from cetopt.cli import build_parser
    from cetopt.cli.recipe_flags import recipe_from_args
    from cetopt.errors import ProblemError

    with pytest.raises(ProblemError) as err:
        recipe_from_args(build_parser().parse_args(["extract", "digits-mlp", "--out", "x.json", *flags]))
    assert err.value.field == named

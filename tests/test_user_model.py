"""The README's "Your own model" section, run as written: its my_model.py and train_mlp.py, its five commands and its ONNX
export and evaluation, from a temporary folder outside the repository, with the command line only (nothing on
PYTHONPATH)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CETOPT = Path(sys.executable).with_name("cetopt")

pytest.importorskip("sklearn")
pytest.importorskip("safetensors")
pytest.importorskip("onnxruntime")

def readme_section() -> tuple[str, str, list[str]]:
    """The section's my_model.py, its train_mlp.py and its command lines (comments stripped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    files = {m.group(1): m.group(0)[len("```python\n"):-3]
             for m in re.finditer(r"```python\n# (\S+\.py)[^\n]*\n.*?```", section, re.S)}
    commands = re.search(r"```bash\n(.*?)```", section, re.S)
    assert set(files) == {"my_model.py", "train_mlp.py"} and commands, \
        f"README 'Your own model' lost its my_model.py, train_mlp.py or bash block (found {sorted(files)})"
    lines = [line.split("#", 1)[0].strip() for line in commands.group(1).splitlines()]
    return files["my_model.py"], files["train_mlp.py"], [line for line in lines if line]


def test_readme_section_has_ten_lines_of_commands_and_code() -> None:
    code, train, commands = readme_section()
    assert [c.split()[1] for c in commands] == ["extract", "solve", "plan", "apply", "evaluate"]
    assert "def spec() -> ModelSpec" in code
    assert "from my_model import" in train and 'torch.save(model.state_dict(), "mlp.pt")' in train


@pytest.mark.slow
def test_user_model_from_outside_the_repo(tmp_path: Path) -> None:
    code, train, commands = readme_section()
    assert not tmp_path.resolve().is_relative_to(ROOT)
    (tmp_path / "my_model.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1")
    (tmp_path / "train_mlp.py").write_text(train)
    subprocess.run([sys.executable, "train_mlp.py"], cwd=tmp_path, env=env, check=True, timeout=300)
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "cetopt"
        done = subprocess.run([str(CETOPT), *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    plan = json.loads((tmp_path / "plan.json").read_text())  # cetopt plan's, written over solve's
    assert plan["format"] == "cetopt.plan/2" and plan["model"].endswith("my_model.py:spec")
    # the wine MLP has no validation batches: the selection says it measured on calibration
    assert plan["extra"]["selection"]["split"] == "calibration" and plan["extra"]["selected"]
    manifest = json.loads((tmp_path / "compressed" / "manifest.json").read_text())
    file_bytes = (tmp_path / "compressed" / "model.safetensors").stat().st_size
    assert manifest["data_bytes"] * 8 == manifest["packed_bits"]  # exact, no slack
    assert file_bytes == manifest["file_bytes"]
    report = outputs[-1]
    assert "accuracy:" in report and "calibration loss change" in report
    accuracy, fp = map(float, re.search(r"accuracy: ([\d.]+) \(FP32 ([\d.]+)\)", report).groups())
    assert fp > 0.9 and accuracy > 0.8  # a 4-bit plan of a 13-64-3 MLP keeps it accurate
    evaluated = subprocess.run([str(CETOPT), "evaluate", "compressed", "--model", "my_model.py:spec", "--format", "json"],
                               cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)
    assert json.loads(evaluated.stdout)["metric"] == pytest.approx(accuracy, abs=1e-4)
    # the section's ONNX sentence, run as written: export, then evaluate the file in onnxruntime
    text = (ROOT / "README.md").read_text().split("## Your own model", 1)[1].split("\n## ", 1)[0]
    export, run = (re.search(rf"`(cetopt {verb} [^`]+)`", " ".join(text.split())).group(1)
                   for verb in ("export", r"evaluate \S+\.onnx"))
    for command in (export, run + " --format json"):
        done = subprocess.run([str(CETOPT), *shlex.split(command)[1:]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    onnx_report = json.loads(done.stdout)
    assert onnx_report["max_relative_error"] <= 1e-4 and onnx_report["argmax_agreement"] >= 0.99
    assert onnx_report["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    # the bench measures the user's problem too, HAWQ-V3 baseline included, with the model the user names (the
    # target recorded in the problem is compared, never imported)
    bench = subprocess.run([str(CETOPT), "bench", "--problems", "problem.json", "--solvers", "dp", "--budgets", "3",
                            "--model", "my_model.py:spec", "--no-plots", "--out", "bench"], cwd=tmp_path, env=env,
                           capture_output=True, text=True,
                           timeout=600)
    assert bench.returncode == 0, bench.stderr[-2000:]
    import csv

    rows = {r["solver"]: r for r in csv.DictReader(open(tmp_path / "bench" / "results.csv"))}
    assert set(rows) == {"dp", "uniform", "hawq-v3"}
    for row in rows.values():
        assert row["status"] in ("optimal", "feasible") and row["metric_name"] == "accuracy", row
        assert float(row["metric"]) > 0.5 and float(row["packed_ratio"]) > 1 and row["unused_avg_bits"] != ""

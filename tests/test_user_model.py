"""The README's "Your own model" section, run as written: its my_model.py, its five commands and its ONNX
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

TRAIN = """
import torch
from sklearn.datasets import load_wine
torch.manual_seed(0)
x, y = load_wine(return_X_y=True)
order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
x, y = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)[order], torch.tensor(y)[order]
model = torch.nn.Sequential(torch.nn.Linear(13, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
opt = torch.optim.Adam(model.parameters(), 1e-2)
for _ in range(200):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x[:128]), y[:128]).backward()
    opt.step()
torch.save(model.state_dict(), "mlp.pt")
"""


def readme_section() -> tuple[str, list[str]]:
    """The section's Python file and its command lines (comments stripped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    commands = re.search(r"```bash\n(.*?)```", section, re.S)
    assert code and commands, "README 'Your own model' lost its python or bash block"
    lines = [line.split("#", 1)[0].strip() for line in commands.group(1).splitlines()]
    return code.group(1), [line for line in lines if line]


def test_readme_section_has_ten_lines_of_commands_and_code() -> None:
    code, commands = readme_section()
    assert [c.split()[1] for c in commands] == ["extract", "solve", "plan", "apply", "evaluate"]
    assert "def spec() -> ModelSpec" in code


@pytest.mark.slow
def test_user_model_from_outside_the_repo(tmp_path: Path) -> None:
    code, commands = readme_section()
    assert not tmp_path.resolve().is_relative_to(ROOT)
    (tmp_path / "my_model.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", TRAIN], cwd=tmp_path, env=env, check=True, timeout=300)
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

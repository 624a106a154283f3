"""`cetopt extract --rounding a,b --group-sizes ...` writes a joint problem: every (bits, group size, rounding) a choice
with its packed size; an unknown rounding is named before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cetopt.quant.quantizers import QuantizerSpec, packed_size_bits


def test_extract_joint_roundings_and_group_sizes(tmp_path: Path, root: Path) -> None:
    out = tmp_path / "joint.json"
    code = ("import sys; sys.path.insert(0, 'tests'); from cetopt.cli import main; "
            f"sys.exit(main(['extract', 'test_cli:user_model', '--bits', '2,4', '--method', 'hawq-v3', '--rounding', "
            f"'nearest,gptq', '--group-sizes', '0,4', '--out', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["name"].endswith("-nearest+gptq") and data["metadata"]["group_sizes"] == [0, 4]
    first = data["layers"][0]  # Linear(6, 8): weight (8, 6)
    assert [(c["bits"], c["group_size"], c["rounding"]) for c in first["choices"]] == [
        (2, 0, "nearest"), (2, 0, "gptq"), (2, 4, "nearest"), (2, 4, "gptq"),
        (4, 0, "nearest"), (4, 0, "gptq"), (4, 4, "nearest"), (4, 4, "gptq")]
    for c in first["choices"]:
        assert c["size_bits"] == packed_size_bits((8, 6), c["bits"], QuantizerSpec(clip="mse", group_size=c["group_size"]))
    bad = subprocess.run([sys.executable, "-m", "cetopt", "extract", "test_cli:user_model", "--rounding", "floor", "--out",
                          str(tmp_path / "x.json")], capture_output=True, text=True, cwd=root, timeout=300)
    assert bad.returncode == 2 and "unknown rounding 'floor'" in bad.stderr


def test_demo_measures_every_plan_with_the_rounding_it_priced(root: Path, monkeypatch) -> None:
    """`cetopt demo --rounding gptq`: the whole-plan check measures the dp plan's gptq weights, so it equals the dp
    row's measured change (with nearest weights it would not)."""
    monkeypatch.syspath_prepend(str(root / "tests"))
    from cetopt.pipeline import run_demo

    from cetopt.problem.model import Budget
    from cetopt.recipe import DEFAULT_RECIPE

    text = run_demo("test_cli:user_model", DEFAULT_RECIPE.replace(rounding="gptq"), budget=Budget(avg_bits=3.0),
                    solvers=["dp"])
    assert "rounding gptq (every plan)" in text
    dp_row = next(line.split() for line in text.splitlines() if line.startswith("cet/dp"))
    whole = next(line.split() for line in text.splitlines() if line.startswith("(whole plan)"))
    assert abs(float(dp_row[6]) - float(whole[-1])) <= 5e-6  # printed to 5 and 6 decimals

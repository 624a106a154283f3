"""Tampered, truncated, mixed and half-written artefacts: every manifest field and plan_sha256 checked,
the stored data re-derived from the source model (a re-hashed manifest does not make an edit valid),
fingerprints required unless overridden, and `apply` swaps a whole folder in, so an error or kill -9 at any
write step leaves the previous artefact intact and no staging folder behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("safetensors")

from cetopt.artifact import (MANIFEST_FILE, PLAN_FILE, WEIGHTS_FILE, file_sha256, load_compressed,  # noqa: E402
                             read_manifest, write_artifact)
from cetopt.cli import main  # noqa: E402
from cetopt.errors import ProblemError  # noqa: E402
from cetopt.quant.plan import Plan  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
try:
    from test_artifact import signed, small_spec  # noqa: E402
finally:
    sys.path.remove(str(TESTS))

PLAN_A, PLAN_B = Plan(bits={"0": 4, "4": 3}), Plan(bits={"0": 8, "4": 6})


def artefact(tmp_path: Path, plan: Plan = PLAN_A) -> Path:
    spec = small_spec()
    write_artifact(spec, signed(plan, spec), tmp_path / "art", target="small")
    return tmp_path / "art"


def edit_manifest(out: Path, **changes: object) -> None:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_an_edited_plan_is_refused_with_or_without_a_rehashed_manifest(tmp_path: Path) -> None:
    out = artefact(tmp_path)
    plan = json.loads((out / PLAN_FILE).read_text())
    plan["layers"]["0"]["bits"] = 8
    (out / PLAN_FILE).write_text(json.dumps(plan))
    with pytest.raises(ProblemError, match="SHA-256"):
        read_manifest(out)
    edit_manifest(out, plan_sha256=file_sha256(out / PLAN_FILE))
    with pytest.raises(ProblemError, match="differs from what its plan.json gives"):
        load_compressed(out, small_spec())


def test_a_flipped_data_bit_under_a_rehashed_manifest_is_refused(tmp_path: Path) -> None:
    out = artefact(tmp_path)
    data = bytearray((out / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0x01  # the last bytes are tensor data (bundle of buffers / parameters)
    (out / WEIGHTS_FILE).write_bytes(bytes(data))
    edit_manifest(out, weights_sha256=file_sha256(out / WEIGHTS_FILE))
    read_manifest(out)  # consistent hashes...
    with pytest.raises(ProblemError, match="altered"):  # ...but not what the plan gives on the source model
        load_compressed(out, small_spec())
    assert load_compressed(out, small_spec(), verify=False).plan.bits == PLAN_A.bits  # unpack-only still works


@pytest.mark.parametrize(("key", "value"), [("packed_bits", -8), ("packed_bits", 7.5), ("data_bytes", "x"),
                                            ("plan_sha256", "0" * 63), ("packed_ratio", 0), ("file_bytes", True),
                                            ("source_fingerprint", None), ("provenance", [])])
def test_every_manifest_field_is_checked(tmp_path: Path, key: str, value: object) -> None:
    out = artefact(tmp_path)
    edit_manifest(out, **{key: value})
    with pytest.raises(ProblemError) as err:
        read_manifest(out)
    assert err.value.field == f"{MANIFEST_FILE}.{key}"


def test_inconsistent_sizes_are_refused(tmp_path: Path) -> None:
    out = artefact(tmp_path)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    edit_manifest(out, packed_bits=manifest["packed_bits"] + 64)
    with pytest.raises(ProblemError, match="disagree"):
        read_manifest(out)


def test_a_truncated_safetensors_with_updated_hash_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = artefact(tmp_path)
    data = (out / WEIGHTS_FILE).read_bytes()
    (out / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    edit_manifest(out, weights_sha256=file_sha256(out / WEIGHTS_FILE), file_bytes=len(data) // 2)
    with pytest.raises(ProblemError, match="not a readable safetensors"):
        load_compressed(out, small_spec())
    (tmp_path / "m.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                   "from test_artifact import small_spec\n\ndef spec():\n    return small_spec()\n")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "art", "--model", "m.py:spec", "--allow-model-mismatch"]) == 2
    err = capsys.readouterr().err
    assert "safetensors" in err and "Traceback" not in err


def model_file(tmp_path: Path) -> str:
    (tmp_path / "m.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                   "from test_artifact import small_spec\n\ndef spec(seed=0):\n    return small_spec(seed)\n"
                                   "def other():\n    return small_spec(1)\n")
    return str(tmp_path / "m.py")


def test_apply_requires_fingerprints_unless_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    target = f"{model_file(tmp_path)}:spec"
    monkeypatch.chdir(tmp_path)
    plan = signed(PLAN_A, small_spec())
    stripped = {k: v for k, v in plan.extra.items() if not k.startswith("fingerprint_")}
    Plan(layers=plan.layers, model=target, extra=stripped).save(tmp_path / "bare.json")
    assert main(["apply", "bare.json", "--model", target, "--out", "a"]) == 2
    assert "--allow-no-fingerprint" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["apply", "bare.json", "--model", target, "--out", "a", "--allow-no-fingerprint"]) == 0
    assert any(r.levelname == "WARNING" and "unverified" in r.message for r in caplog.records)
    assert (tmp_path / "a" / MANIFEST_FILE).is_file()
    # a plan of other weights is bad input (exit 2), not a failed computation (3)
    Plan(layers=plan.layers, model=f"{tmp_path / 'm.py'}:other", extra=plan.extra).save(tmp_path / "other.json")
    assert main(["apply", "other.json", "--model", f"{tmp_path / 'm.py'}:other", "--out", "b"]) == 2
    assert "other weights" in capsys.readouterr().err


def test_out_holding_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    spec = small_spec()
    with pytest.raises(ProblemError, match="not a cetopt artefact's"):
        write_artifact(spec, signed(PLAN_A, spec), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "art")


@pytest.mark.parametrize("step", [0, 1, 2])
def test_an_error_at_any_write_step_keeps_the_old_artefact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           step: int) -> None:
    import cetopt._atomic as atomic

    out = artefact(tmp_path, PLAN_A)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = atomic.atomic_write_bytes
    calls = []

    def failing(path, data):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) > step:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", failing)
    spec = small_spec()
    with pytest.raises(OSError):
        write_artifact(spec, signed(PLAN_B, spec), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(tmp_path) == []
    assert load_compressed(out, small_spec()).plan.bits == PLAN_A.bits


KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import cetopt._atomic as atomic
from cetopt.artifact import write_artifact
from cetopt.quant.plan import Plan
from test_artifact import signed, small_spec
step, calls, real = {step}, [], atomic.atomic_write_bytes
def dying(path, data):
    calls.append(path)
    if len(calls) > step:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data)
atomic.atomic_write_bytes = dying
spec = small_spec()
write_artifact(spec, signed(Plan(bits={{"0": 8, "4": 6}}), spec), {out!r})
"""


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_kill_9_at_any_write_step_keeps_the_old_artefact(tmp_path: Path, step: int) -> None:
    out = artefact(tmp_path, PLAN_A)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    done = subprocess.run([sys.executable, "-c", KILLER.format(tests=str(TESTS), step=step, out=str(out))],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    if step < 3:
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert load_compressed(out, small_spec()).plan.bits == PLAN_A.bits
    else:  # all three files written: the new artefact is in place
        assert done.returncode == 0, done.stderr[-2000:]
        assert load_compressed(out, small_spec()).plan.bits == PLAN_B.bits
    spec = small_spec()
    write_artifact(spec, signed(PLAN_B, spec), out)  # the next apply removes what the killed one left
    assert leftovers(tmp_path) == []
    assert load_compressed(out, small_spec()).plan.bits == PLAN_B.bits


def test_concurrent_writers_never_mix(tmp_path: Path) -> None:
    """Two applies of different plans into one folder at once: the result is one run's plan with that run's
    weights (verified by re-derivation), never one's plan with the other's weights."""
    script = ("import sys\nsys.path.insert(0, {tests!r})\nfrom cetopt.artifact import write_artifact\n"
              "from cetopt.quant.plan import Plan\nfrom test_artifact import signed, small_spec\nspec = small_spec()\n"
              "for _ in range(4):\n    write_artifact(spec, signed(Plan(bits={bits}), spec), {out!r})\n")
    runs = [subprocess.Popen([sys.executable, "-c", script.format(tests=str(TESTS), bits=plan.bits,
                                                                  out=str(tmp_path / "art"))],
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
            for plan in (PLAN_A, PLAN_B)]
    for run in runs:
        assert run.wait(timeout=180) == 0, run.stderr.read()[-2000:] if run.stderr else ""
    loaded = load_compressed(tmp_path / "art", small_spec())
    assert loaded.plan.bits in (PLAN_A.bits, PLAN_B.bits)
    assert leftovers(tmp_path) == []

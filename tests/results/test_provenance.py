"""Results files against the code that made them: a README section may not rest on a results file older than its
code unless docs/results/stale.json declares it (and says so in the section)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cetopt.results import provenance
from cetopt.results.provenance import (ROOT, ResultSource, code_sha256, code_version, generator_code, record_for,
                                       section_states, stale_note)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the provenance check dates files with git")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "gen.py").write_text("print('v1')\n")
    (tmp_path / "out.json").write_text(json.dumps({"rows": [1]}))
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "run")
    monkeypatch.setattr(provenance, "SECTION_SOURCES", {"s": (ResultSource("out*.json", ("gen.py",)),)})
    provenance._section_states.cache_clear()
    yield tmp_path
    provenance._section_states.cache_clear()


def test_unversioned_file_is_current_until_its_code_changes(repo: Path) -> None:
    (state,) = section_states("s", repo)
    assert not state.stale and stale_note("s", repo) == ""
    (repo / "gen.py").write_text("print('v2')\n")  # an uncommitted edit already makes the results older
    provenance._section_states.cache_clear()
    (state,) = section_states("s", repo)
    assert state.stale and "gen.py changed since the commit that wrote it" in state.reason
    _git(repo, "commit", "-qam", "new code")
    provenance._section_states.cache_clear()
    assert section_states("s", repo)[0].stale
    assert "out.json (not declared in docs/results/stale.json)" in stale_note("s", repo)


def test_a_recorded_code_version_is_compared_by_content(repo: Path) -> None:
    version = code_version(("gen.py",), repo)
    assert version["sha256"] == code_sha256(("gen.py",), repo) and len(version["commit"]) == 40
    (repo / "out.json").write_text(json.dumps({"rows": [1], "code_version": version}))
    _git(repo, "commit", "-qam", "rerun")
    (state,) = section_states("s", repo)
    assert not state.stale and "records the code it was run with" in state.reason
    (repo / "gen.py").write_text("print('v3')\n")
    _git(repo, "commit", "-qam", "edit")
    provenance._section_states.cache_clear()
    (state,) = section_states("s", repo)
    assert state.stale and "was run with other code" in state.reason


def test_the_ledger_declares_and_the_note_quotes(repo: Path) -> None:
    (repo / "gen.py").write_text("print('v2')\n")
    (repo / "docs" / "results").mkdir(parents=True)
    (repo / provenance.LEDGER).write_text(json.dumps({"stale": {"out.json": "too slow to rerun here"}}))
    (state,) = section_states("s", repo)
    assert state.stale and state.declared == "too slow to rerun here"
    assert "out.json (too slow to rerun here)" in stale_note("s", repo)


def test_writers_record_the_registered_code() -> None:
    assert generator_code("benchmarks/results/selection.json")[0] == "benchmarks/selection.py"
    assert generator_code(ROOT / "benchmarks/results/cost_models_pretrained_minilm.json")[0] == \
        "benchmarks/cost_models_pretrained.py"
    with pytest.raises(KeyError, match="SECTION_SOURCES"):
        generator_code("benchmarks/results/nothing.json")
    assert record_for(Path("/tmp/elsewhere.json"), "benchmarks/selection.py")["files"] == ["benchmarks/selection.py"]


def _full_history() -> bool:
    if not (ROOT / ".git").exists():
        return False
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"], capture_output=True,
                          text=True)
    return done.returncode == 0 and done.stdout.strip() == "false"


@pytest.mark.skipif(not _full_history(), reason="needs the repository's full git history (not a shallow clone)")
def test_every_stale_results_file_behind_the_readme_is_declared_and_every_declaration_holds() -> None:
    # a README section generated from a results file older than its code fails here unless the ledger says why
    # (and then the section says it too); a declaration for a file that is current again must be removed
    provenance._section_states.cache_clear()
    declared = provenance.ledger()
    states = {s.path: s for name in provenance.SECTION_SOURCES for s in section_states(name)}
    undeclared = [f"{p}: {s.reason}" for p, s in states.items() if s.stale and s.declared is None]
    outdated = [p for p, s in states.items() if not s.stale and s.declared is not None]
    unknown = [p for p in declared if p not in states]
    assert not undeclared, f"stale results files not in {provenance.LEDGER}: {undeclared}; rerun them or declare why"
    assert not outdated, f"{provenance.LEDGER} declares current files stale: {outdated}; remove them"
    assert not unknown, f"{provenance.LEDGER} declares files no README section reads: {unknown}"


def test_readme_sections_name_their_stale_files() -> None:
    from cetopt.results import document_of

    for name in provenance.SECTION_SOURCES:
        note = stale_note(name)
        if note:
            document = document_of(name)
            assert note in (ROOT / document).read_text(), \
                f"{document} section {name!r} does not say it rests on stale files: run python -m cetopt.results"

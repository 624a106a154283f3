"""Is a results file older than the code that made it? The README's generated sections read results files; a
section is only as current as the files behind it.

Each results file a section reads is registered here with the code that generates it (:data:`SECTION_SOURCES`).
A file is *current* when

- it records a code version (``"code_version"``, written by :func:`code_version`: the SHA-256 of the generating
  files' contents, and the git commit for people) and that digest equals the generating files' digest now; or,
- for a file that records none (older runs), when every generating file's content is what it was in the commit
  that last wrote the results file (git).

A file that is not current is *stale*. Stale files that cannot be regenerated yet are declared, with the reason,
in ``docs/results/stale.json``; each README section names the declared stale files it is built from
(:func:`stale_note`), and tests/results/test_provenance.py fails on a stale file that is not declared and on a
declaration that is no longer true. ``python -m cetopt.results.provenance`` lists every file's state.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]
LEDGER = "docs/results/stale.json"


@dataclass(frozen=True)
class ResultSource:
    """Results files (a glob relative to the repository root) and the code files that generate them."""

    results: str
    code: tuple[str, ...]


# the code that defines the pretrained models' data splits: part of what made any result measured on them
_MOBILENET_DATA = ("cetopt/zoo/specs.py", "cetopt/zoo/photos.py")
_MINILM_DATA = ("cetopt/zoo/specs.py", "cetopt/zoo/minilm_text.py", "cetopt/data/minilm_prose.tsv")
_PRETRAINED = ResultSource("benchmarks/results/cost_models_pretrained*.json",
                           ("benchmarks/cost_models_pretrained.py", "benchmarks/cost_models_pretrained_report.py",
                            *_MOBILENET_DATA[1:], *_MINILM_DATA))
_LITE0 = ("benchmarks/user_check.py", "benchmarks/user_models/efficientnet_lite0.py")
_QUALITY = ResultSource("docs/results/quality/results.json", ("cetopt/results/quality.py",))

# README section -> the results files its generator reads, with their generating code. The digits and MNIST-1D
# `cetopt prove` runs are not registered: their code is the whole of cetopt.theory
SECTION_SOURCES: dict[str, tuple[ResultSource, ...]] = {
    "quality": (_QUALITY,),
    "zoo": (_QUALITY,),
    "pretrained": (_PRETRAINED,),
    "selection": (ResultSource("benchmarks/results/selection.json",
                               ("benchmarks/selection.py", *_MOBILENET_DATA[1:], *_MINILM_DATA)),
                  ResultSource("benchmarks/results/user-check.json",
                               ("benchmarks/user_check.py", "benchmarks/user_models/mobilenetv2_distill.py",
                                "benchmarks/user_models/minilm_cls.py"))),
    "evaluation": (ResultSource("benchmarks/results/evaluation-check.json", _LITE0),
                   ResultSource("benchmarks/results/evaluation-check-fidelity.json", _LITE0),
                   ResultSource("benchmarks/results/evaluation-check-lite2.json",
                                (*_LITE0, "benchmarks/user_models/efficientnet_lite2.py"))),
    "cet-checks": (ResultSource("docs/results/cet-checks/mobilenetv2*/results.json", _MOBILENET_DATA),
                   ResultSource("docs/results/cet-checks/minilm*/results.json", _MINILM_DATA)),
}


def generator_code(results: str | Path, root: Path = ROOT) -> tuple[str, ...]:
    """The generating code registered for results file ``results`` (a path; relative to ``root`` or absolute).

    Raises:
        KeyError: no registered source matches it (register it in :data:`SECTION_SOURCES`).
    """
    path = Path(results)
    rel = str(path.resolve().relative_to(root.resolve())) if path.is_absolute() else str(path)
    for sources in SECTION_SOURCES.values():
        for source in sources:
            if fnmatch.fnmatch(rel, source.results):
                return source.code
    raise KeyError(f"{rel}: no README section registers this results file in cetopt.results.provenance.SECTION_SOURCES")


def record_for(results: str | Path, script: str, root: Path = ROOT) -> dict[str, Any]:
    """The ``"code_version"`` a writer of ``results`` records: over its registered generating code, or over
    ``script`` alone (a path relative to ``root``) when no README section reads that file."""
    try:
        code = generator_code(results, root)
    except (KeyError, ValueError):
        code = (script,)
    return code_version(code, root)


@dataclass(frozen=True)
class FileState:
    """One results file: ``stale`` and why (``reason``), and the reason declared in the ledger (None if none)."""

    path: str
    stale: bool
    reason: str
    declared: str | None


def code_sha256(code: Sequence[str], root: Path = ROOT) -> str:
    """SHA-256 (hex) over the generating files' paths and contents, in the order given."""
    h = hashlib.sha256()
    for name in code:
        h.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return h.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(code: Sequence[str], root: Path = ROOT) -> dict[str, Any]:
    """What a results file records as ``"code_version"``: the generating files, their SHA-256 (:func:`code_sha256`)
    and the git commit they were run at (None outside a git checkout; "+modified" when they had uncommitted edits)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is not None and _git(root, "status", "--porcelain", "--", *code):
        commit += "+modified"
    return {"files": list(code), "sha256": code_sha256(code, root), "commit": commit}


def _code_changed_since(root: Path, path: str, code: Sequence[str]) -> list[str] | None:
    """The generating files whose content now differs from their content at the commit that last wrote ``path``
    ([] when none differs or ``path`` itself has uncommitted edits; None when git cannot tell)."""
    status = _git(root, "status", "--porcelain", "--", path)
    if status is None:
        return None
    if status:
        return []  # written now, by the code as it is now
    commit = _git(root, "log", "-1", "--format=%H", "--", path)
    if not commit:
        return None
    changed = []
    for name in code:
        then = _git(root, "rev-parse", f"{commit}:{name}")
        now = _git(root, "hash-object", str(root / name))
        if then is None or now is None or then != now:
            changed.append(name)
    return changed


def _state(root: Path, path: str, code: Sequence[str]) -> tuple[bool, str]:
    try:
        recorded = json.loads((root / path).read_text()).get("code_version")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, Mapping) and list(recorded.get("files", ())) == list(code):
        now = code_sha256(code, root)
        if recorded.get("sha256") == now:
            return False, f"records the code it was run with ({', '.join(code)} at {now[:12]})"
        return True, (f"was run with other code: {', '.join(code)} had SHA-256 {str(recorded.get('sha256'))[:12]} "
                      f"(commit {recorded.get('commit')}), now {now[:12]}")
    changed = _code_changed_since(root, path, code)
    if changed is None:
        return True, "records no code version and git cannot compare it with its code"
    if changed:
        return True, f"records no code version, and {', '.join(changed)} changed since the commit that wrote it"
    return False, "records no code version; its code is as it was in the commit that wrote it"


def ledger(root: Path = ROOT) -> dict[str, str]:
    """The declared stale results files: path -> why they are not regenerated yet."""
    path = root / LEDGER
    return dict(json.loads(path.read_text())["stale"]) if path.is_file() else {}


@functools.lru_cache(maxsize=None)
def _section_states(name: str, root: Path) -> tuple[FileState, ...]:
    declared = ledger(root)
    out = []
    for source in SECTION_SOURCES.get(name, ()):
        for found in sorted(glob.glob(str(root / source.results))):
            rel = str(Path(found).relative_to(root))
            stale, reason = _state(root, rel, source.code)
            out.append(FileState(path=rel, stale=stale, reason=reason, declared=declared.get(rel)))
    return tuple(out)


def section_states(name: str, root: Path = ROOT) -> tuple[FileState, ...]:
    """The state of every results file README section ``name`` is generated from (empty for unregistered ones)."""
    return _section_states(name, root)


def stale_note(name: str, root: Path = ROOT) -> str:
    """A line for the end of README section ``name``: the stale results files it is built from, each with the
    ledger's reason ("" when every file is current)."""
    stale = [s for s in section_states(name, root) if s.stale]
    if not stale:
        return ""
    parts = [f"{s.path} ({s.declared or 'not declared in ' + LEDGER})" for s in stale]
    return ("**Stale:** this section is generated from results files older than the code that makes them: "
            + "; ".join(parts) + ".")


def main(argv: list[str] | None = None) -> int:
    """Print each registered results file's state; exit 1 when a stale file is undeclared or a declaration is
    out of date."""
    del argv
    declared, bad = ledger(), 0
    seen: set[str] = set()
    for name in SECTION_SOURCES:
        for s in section_states(name):
            if s.path in seen:
                continue
            seen.add(s.path)
            flag = "stale" if s.stale else "current"
            problem = (s.stale and s.declared is None) or (not s.stale and s.declared is not None)
            bad += problem
            print(f"{'!!' if problem else '  '} {flag:7} {s.path}: {s.reason}"
                  + (f" [declared: {s.declared}]" if s.declared else ""))
    for path in declared:
        if path not in seen:
            print(f"!! {LEDGER} declares {path}, which no README section reads")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

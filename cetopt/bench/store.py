"""Where bench results live: one JSON file per finished cell (written atomically, so a killed run loses
at most the cell in flight and never leaves half a row), consolidated into ``results.csv``.

Resuming skips every cell whose file exists with the same key (:func:`key_for`: problem and solver files
by content hash, plus budget and run settings); the CSV is rebuilt from the cell files, sorted, so it
never holds duplicates."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from cetopt._atomic import atomic_write_text

if TYPE_CHECKING:
    import numpy as np

ROW_FORMAT = "cetopt.bench-row/1"
COLUMNS = (
    "problem", "model", "method", "layers", "solver", "backend", "kind", "budget_avg_bits", "status", "limit",
    "objective", "bound", "gap", "seconds", "wall_seconds", "size_bits", "avg_bits", "unused_avg_bits", "metric_name",
    "metric", "fp_metric", "measured_dloss", "packed_ratio", "bits", "options", "versions", "fingerprint", "outcomes", "message",
)


def number(value: Any) -> float | None:
    """A finite float from a row cell (CSV text or JSON value), or None when empty, NaN or not a number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (first 16 hex digits), or "-" for a name that is not a file (a backend or
    baseline name); cached per (path, size, times, inode) so a bench run hashes each file once."""
    try:
        info = Path(path).stat()
    except OSError:
        return "-"
    return _digest(str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


@lru_cache(maxsize=1024)
def _digest(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cell_key(problem: str, solver: str, budget: float, *, problem_digest: str = "-", solver_digest: str = "-",
             settings: str = "") -> str:
    """The identity of a cell: problem name AND content hash, solver name AND config hash, the budget, and
    the run settings (time limit, measuring), so two problems named x.json in different folders, an edited
    problem or solver file, or a different time limit never reuse each other's cell."""
    return f"{problem}#{problem_digest}|{solver}#{solver_digest}|{budget:g}|{settings}"


def key_for(cell: Any) -> str:
    """``cell_key`` of a :class:`cetopt.bench.cell.Cell` (its files are hashed by content)."""
    return cell_key(cell.problem_name, cell.solver_name, cell.budget_avg_bits, problem_digest=file_digest(cell.problem),
                    solver_digest=file_digest(cell.solver) if cell.solver.endswith(".toml") else "-",
                    settings=f"t={cell.time_limit:g};measure={int(bool(cell.measure))};"
                             f"reextract={int(bool(getattr(cell, 'reextract', False)))}"
                             + (f";models={','.join(sorted(cell.models))}" if getattr(cell, "models", ()) else ""))


def cell_path(out: Path, key: str) -> Path:
    return out / "cells" / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.json"


def write_cell(out: Path, key: str, row: dict[str, Any]) -> Path:
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"bench row lacks columns {missing}")
    return atomic_write_text(cell_path(out, key), json.dumps({"format": ROW_FORMAT, "key": key, "row": row},
                                                              sort_keys=True, default=str))


def read_cell(out: Path, key: str) -> dict[str, Any] | None:
    """The stored row of ``key``, or None when absent, unreadable or of another key/format."""
    from cetopt.errors import ProblemError
    from cetopt.inputs import read_regular_file

    path = cell_path(out, key)
    if not path.exists():
        return None
    try:  # bounded and regular files only (a FIFO in cells/ must not hang a resume); rows may hold NaN
        data = json.loads(read_regular_file(path, None, "bench cell"))
    except (ProblemError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != ROW_FORMAT or data.get("key") != key:
        return None
    return data["row"]


def all_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    from cetopt.errors import ProblemError
    from cetopt.inputs import read_regular_file

    for path in sorted((out / "cells").glob("*.json")):
        try:
            data = json.loads(read_regular_file(path, None, "bench cell"))
        except (ProblemError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == ROW_FORMAT:
            rows.append(data["row"])
    return sorted(rows, key=lambda r: (r["problem"], r["budget_avg_bits"], r["kind"], r["solver"]))


def write_csv(out: Path, rows: Iterable[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row[c]) for c in COLUMNS})
    return atomic_write_text(out / "results.csv", buffer.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def encode_outcomes(outcomes: "np.ndarray") -> str:
    """Per-example test outcomes as compact text for a row: "bits:<base64>" when every outcome is 0/1 (one bit
    each), else "f16:<base64>" (float16, enough for a paired CI on metrics in [0, 1] such as cosines)."""
    import base64

    import numpy as np

    values = np.asarray(outcomes, dtype=np.float64).ravel()
    if np.isin(values, (0.0, 1.0)).all():
        packed = np.packbits(values.astype(np.uint8))
        return f"bits:{values.size}:" + base64.b64encode(packed.tobytes()).decode()
    return f"f16:{values.size}:" + base64.b64encode(values.astype("<f2").tobytes()).decode()


def decode_outcomes(text: str | None) -> "np.ndarray | None":
    """The array :func:`encode_outcomes` wrote (None for an empty cell or unreadable text)."""
    import base64
    import binascii

    import numpy as np

    if not text or not isinstance(text, str):
        return None
    kind, _, rest = text.partition(":")
    size_text, _, payload = rest.partition(":")
    try:
        size, raw = int(size_text), base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error):
        return None
    if kind == "bits":
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:size].astype(np.float64)
    if kind == "f16" and len(raw) == 2 * size:
        return np.frombuffer(raw, dtype="<f2").astype(np.float64)
    return None

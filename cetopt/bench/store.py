"""Where bench results live: one JSON file per finished cell (written atomically, so a killed run loses
at most the cell in flight and never leaves half a row), consolidated into ``results.csv``.

Resuming skips every cell whose file exists with the same key; the CSV is rebuilt from the cell files,
sorted, so it never holds duplicates."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from cetopt._atomic import atomic_write_text

ROW_FORMAT = "cetopt.bench-row/1"
COLUMNS = (
    "problem", "model", "method", "layers", "solver", "backend", "kind", "budget_avg_bits", "status", "limit",
    "objective", "bound", "gap", "seconds", "wall_seconds", "size_bits", "avg_bits", "metric_name", "metric",
    "fp_metric", "measured_dloss", "packed_ratio", "bits", "options", "versions", "fingerprint", "message",
)


def number(value: Any) -> float | None:
    """A finite float from a row cell (CSV text or JSON value), or None when empty, NaN or not a number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def cell_key(problem: str, solver: str, budget: float) -> str:
    return f"{problem}|{solver}|{budget:g}"


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
    path = cell_path(out, key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != ROW_FORMAT or data.get("key") != key:
        return None
    return data["row"]


def all_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((out / "cells").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
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

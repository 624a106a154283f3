"""Finished parts of a ``cetopt prove`` run kept on disk, so that a long run (MobileNetV2: hours on 2 cores)
can be stopped and resumed: each check's result and each bit-width's rows of the equal-size table are
written to ``OUTDIR/checkpoints/`` as JSON the moment they are done, and a later run with the same inputs
reads them instead of recomputing.

The key of a run holds what its numbers depend on: the model's fingerprint (weights, quantised layers,
calibration data), the curvature settings and the candidate bits; the equal-size table's rows, which report test
metrics, are also keyed by the test data (``test_key``). A checkpoint under another key is ignored
(and overwritten), never mixed in. The code's version is not in the key, as with the curvature cache: after
changing a check, run with ``fresh=True`` (``cetopt prove --fresh``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cetopt._atomic import atomic_write_text
from cetopt.theory.allocation import PlanMeasurement
from cetopt.theory.report import CheckResult, Verdict

FORMAT = "cetopt.prove-checkpoint/1"


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: arrays to lists, NumPy scalars to Python numbers, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _cell(value: Any) -> Any:
    """A table cell that renders the same after the round trip: Python numbers and strings stay (float64 is a
    float), anything else (float32, NumPy ints, objects) keeps the text the report would have shown."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class ProveCheckpoints:
    """The checkpoint folder of one prove run (``OUTDIR/checkpoints``) under one run key."""

    def __init__(self, outdir: str | os.PathLike[str], key: Mapping[str, Any],
                 test_key: Mapping[str, Any] | None = None,
                 check_keys: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """``key``: what every part depends on; ``test_key``: what identifies the test data (the table's rows);
        ``check_keys``: check number -> the settings only that check depends on (check 5's variant count)."""
        self.folder = Path(outdir) / "checkpoints"
        self.key = _plain(dict(key))
        self.table_key = _plain({**dict(key), "test": dict(test_key or {})})
        self.check_keys = {int(n): _plain({**dict(key), "check": dict(extra)}) for n, extra in (check_keys or {}).items()}

    def _read(self, name: str, key: Any = None) -> Any | None:
        from cetopt.errors import ProblemError
        from cetopt.inputs import read_regular_file

        path = self.folder / f"{name}.json"
        if not path.exists():
            return None
        try:  # bounded, regular files only: a FIFO or device in checkpoints/ must not hang a resume
            saved = json.loads(read_regular_file(path, None, "checkpoint").decode("utf-8"))
        except (ProblemError, ValueError, RecursionError):
            return None  # unreadable: computed again
        wanted = self.key if key is None else key
        if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("key") != wanted:
            return None
        return saved.get("value")

    def _write(self, name: str, value: Any, key: Any = None) -> None:
        atomic_write_text(self.folder / f"{name}.json", json.dumps(
            {"format": FORMAT, "key": self.key if key is None else key, "value": value}, indent=1, allow_nan=True))

    def check(self, number: int) -> CheckResult | None:
        """Check ``number``'s result saved under this key, or None."""
        saved = self._read(f"check{number}", self.check_keys.get(number))
        if not isinstance(saved, dict):
            return None
        table = saved.get("table")
        return CheckResult(
            number=int(saved["number"]), title=saved["title"], claim=saved["claim"], statistic=saved["statistic"],
            value=saved["value"], tolerance=saved["tolerance"], verdict=Verdict(saved["verdict"]),
            notes=saved.get("notes", ""), table=None if table is None else (tuple(table[0]), [tuple(r) for r in table[1]]),
            figures=tuple(saved.get("figures", ())), data=saved.get("data", {}))

    def save_check(self, result: CheckResult) -> None:
        table = None if result.table is None else [list(result.table[0]),
                                                    [[_cell(v) for v in row] for row in result.table[1]]]
        self._write(f"check{result.number}", {
            "number": result.number, "title": result.title, "claim": result.claim, "statistic": result.statistic,
            "value": result.value, "tolerance": result.tolerance, "verdict": result.verdict.value,
            "notes": result.notes, "table": table, "figures": list(result.figures), "data": _plain(result.data)},
            self.check_keys.get(result.number))

    def table_rows(self, bits: int) -> list[PlanMeasurement] | None:
        """The equal-size table's rows at ``bits`` average bits saved under this key, or None."""
        saved = self._read(f"table{bits}", self.table_key)
        if not isinstance(saved, list):
            return None
        names = {f.name for f in fields(PlanMeasurement)}
        return [PlanMeasurement(**{k: v for k, v in row.items() if k in names}) for row in saved]

    def save_table_rows(self, bits: int, rows: Sequence[PlanMeasurement]) -> None:
        self._write(f"table{bits}", [_plain(asdict(r)) for r in rows], self.table_key)

    def clear(self) -> None:
        """Forget every checkpoint of this folder (``--fresh``)."""
        for path in self.folder.glob("*.json") if self.folder.is_dir() else ():
            path.unlink()

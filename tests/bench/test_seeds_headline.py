"""benchmarks/seeds_headline.py: ``--rejudge`` reads back exactly the measurements a run wrote (the committed
results files), and the helpers that summarise verdicts and rank sets."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "docs" / "results" / "seeds"


@pytest.fixture(scope="module")
def script():  # noqa: ANN201 - the benchmark module
    spec = importlib.util.spec_from_file_location("seeds_headline", ROOT / "benchmarks" / "seeds_headline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_overall_and_rank_ranges(script) -> None:  # noqa: ANN001
    assert script._overall(["pass", "pass"]) == "pass"
    assert script._overall(["pass", "fail", "inconclusive"]) == "fail"
    assert script._overall(["inconclusive", "inconclusive"]) == "inconclusive"
    assert script._overall(["pass", "inconclusive"]) == "partial"
    assert script._ranks([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert script._ranks([]) == "(none)"


@pytest.mark.parametrize("stem, reader, key", [("cet-headline", "_walks_from", "walks"),
                                               ("llc-rank", "_llc_runs_from", "runs")])
def test_rejudge_reads_back_every_measurement(script, stem: str, reader: str, key: str) -> None:  # noqa: ANN001
    path = SEEDS / f"{stem}.json"
    if not path.is_file():
        pytest.skip(f"{path} not generated")
    runs, seconds = getattr(script, reader)(path)
    saved = json.loads(path.read_text())
    assert seconds == saved["seconds"]
    for model, items in runs.items():
        written = saved[key][model]
        assert len(items) == len(written)
        for item, entry in zip(items, written):
            again = json.loads(json.dumps(dataclasses.asdict(item), default=float))
            assert again == {k: v for k, v in entry.items() if k in again}


def test_rejudge_reads_back_the_joint_runs(script) -> None:  # noqa: ANN001
    path = SEEDS / "lowrank-joint.json"
    if not path.is_file():
        pytest.skip(f"{path} not generated")
    runs, skipped, _ = script._joint_runs_from(path)
    saved = json.loads(path.read_text())
    assert skipped == saved["skipped"]
    flat = [r for rs in runs.values() for r in rs]
    assert len(flat) == sum(len(v) for v in saved["runs"].values())
    assert [json.loads(json.dumps(r.to_dict())) for r in flat] == [e for v in saved["runs"].values() for e in v]


def test_rejudge_reads_back_the_compact_walks(script) -> None:  # noqa: ANN001
    path = SEEDS / "lowrank-compact.json"
    if not path.is_file():
        pytest.skip(f"{path} not generated")
    walks, seconds = script._compact_walks_from(path)
    saved = json.loads(path.read_text())
    assert seconds == saved["seconds"]
    for model, items in walks.items():
        assert [json.loads(json.dumps(w.to_dict())) for w in items] == saved["walks"][model]

"""README generation: marked sections, the --check mode, and the speed section built from results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cetopt.results import SectionError, render, replace_section, section_names
from cetopt.results.__main__ import main
from cetopt.results.speed import agree, speed_section

README = "# title\n\nintro\n<!-- BEGIN speed -->\nold text\n<!-- END speed -->\ntail\n"


def test_replace_section_keeps_everything_outside_the_markers() -> None:
    out = replace_section(README, "speed", "new body")
    assert out == "# title\n\nintro\n<!-- BEGIN speed -->\nnew body\n<!-- END speed -->\ntail\n"
    assert replace_section(out, "speed", "new body") == out  # idempotent
    assert section_names(out) == ["speed"]


@pytest.mark.parametrize("text, fix", [
    ("no markers", "add the two markers"),
    ("<!-- BEGIN speed -->\n<!-- BEGIN speed -->\n<!-- END speed -->", "add the two markers"),
    ("<!-- END speed -->\n<!-- BEGIN speed -->", "swap them"),
])
def test_bad_markers_name_the_section(text: str, fix: str) -> None:
    with pytest.raises(SectionError, match=f"'speed'.*{fix}"):
        replace_section(text, "speed", "x")


def test_unknown_section_is_named() -> None:
    with pytest.raises(SectionError, match="no README section named 'nope'"):
        render(README, ["nope"])


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else sum(ordered[len(ordered) // 2 - 1:][:2]) / 2
    return {"values": values, "min": min(values), "median": median, "max": max(values),
            "spread": (max(values) - min(values)) / median}


LOAD = {"load": {"load_before": [1.5, 1.0, 1.0], "load_after": [2.5, 1.0, 1.0], "cpu_count": 2, "usable_cpus": 2,
                 "torch_threads": None, "omp_num_threads": None}}


def solver_file(run: str, dp_call: float, pulp_ratio: list[float]) -> dict:
    rows = [
        {"solver": "dp", "status": "optimal", "limit": None, "objective": 1.0, "gap": 0.0, "excess_vs_best": 0.0,
         "solver_s": summary([dp_call / 2] * 2), "call_s": summary([dp_call] * 2), "process_s": summary([3.0, 3.0]),
         "outside_solver_in_process": summary([0.9, 0.9]), "pulp_over_call": summary(pulp_ratio)},
        {"solver": "pulp-cbc", "status": "optimal", "limit": None, "objective": 1.0, "gap": None,
         "solver_s": None, "call_s": summary([dp_call * pulp_ratio[0]] * 2), "process_s": None},
    ]
    return {"meta": {"run": run}, "cells": [{"layers": 1000, "choices": 8, "timing": LOAD, "rows": rows}],
            "wall_check": None}


def curvature_file(steady: float) -> dict:
    eq = {"variance_ratio_vs_restricted": {"shared": {"median": 2.0, "max": 7.0}},
          "speedup_vs_loop": {"restricted": summary([1.05, 1.05]), "shared": summary([3.0, 3.0])}, "timing": LOAD}
    row = {"model": "resnet18", "layers": 21, "weights": 11_000_000, "batch": 32, "test_accuracy": 0.93,
           "hvp": {"timing": {**LOAD, "rounds": 2, "seconds": {"forward+backward": summary([0.1, 0.1])}},
                   "hvp_steady_over_fb": summary([steady, steady]), "hvp_one_off_over_fb": summary([3.3, 3.3])},
           "equal_error": eq}
    return {"meta": {}, "rows": [row]}


def write_results(tmp: Path, second_ratio: float) -> Path:
    tmp.mkdir(exist_ok=True)
    for run, ratio in (("1", 10.0), ("2", second_ratio)):
        (tmp / f"solvers-all-run{run}.json").write_text(json.dumps(solver_file(run, 0.5, [ratio, ratio])))
        (tmp / f"curvature-run{run}.json").write_text(json.dumps(curvature_file(2.0)))
    return tmp


def test_speed_section_quotes_the_files_and_names_each_time(tmp_path: Path) -> None:
    text = speed_section(write_results(tmp_path / "r", 11.0))
    assert "| 1,000 x 8 | `dp` | optimal | 0.25 s / 0.25 s | 0.5 s / 0.5 s | 3 s / 3 s | 10x / 11x |" in text
    assert "**solver** = the backend alone" in text and "**call** = one whole" in text
    assert "| 0.1 s / 0.1 s | 2 | 2x / 2x | 3.3x / 3.3x | 1.05x / 1.05x | 3x / 3x (7) |" in text
    assert "differ > 20%" not in text
    assert "Each benchmark ran 2 times" in text and "load 1.5 to 2.5" in text
    n = text.count("ratios agree")
    assert n == 1 and "5 of 5 ratios agree within 20%" in text


def test_runs_that_disagree_are_flagged(tmp_path: Path) -> None:
    text = speed_section(write_results(tmp_path / "r", 13.0))  # 13 / 10 - 1 = 30% > 20%
    assert "10x / 13x (differ > 20%)" in text and "4 of 5 ratios agree" in text
    assert agree([1.0, 1.2]) is True and agree([1.0, 1.21]) is False and agree([1.0]) is None


def test_an_hvp_only_file_with_more_rounds_supersedes_the_hvp_figures(tmp_path: Path) -> None:
    results = write_results(tmp_path / "r", 11.0)
    for run in ("1", "2"):
        extra = curvature_file(2.5)
        row = extra["rows"][0]
        del row["equal_error"]
        row["hvp"]["timing"]["rounds"] = 9
        (results / f"curvature-hvp-run{run}.json").write_text(json.dumps(extra))
    text = speed_section(results)
    assert "| 0.1 s / 0.1 s | 9 | 2.5x / 2.5x | 3.3x / 3.3x | 1.05x / 1.05x | 3x / 3x (7) |" in text


def test_missing_results_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(SectionError, match="make bench"):
        speed_section(tmp_path)


def test_check_mode_and_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cetopt.results as results

    monkeypatch.setattr(results, "section_body", lambda name: f"generated {name}")
    monkeypatch.setattr("cetopt.results.__main__.DOCUMENTS", {"README.md": ("speed",), "docs/more.md": ("quality",)})
    (tmp_path / "docs").mkdir()
    readme, more = tmp_path / "README.md", tmp_path / "docs" / "more.md"
    readme.write_text(README)
    more.write_text(README.replace("speed", "quality"))
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert readme.read_text() == README  # --check writes nothing
    assert main(["--root", str(tmp_path), "--section", "speed"]) == 0  # one section: the other document untouched
    assert "generated speed" in readme.read_text() and "old text" in more.read_text()
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert "generated quality" in more.read_text() and "old text" not in more.read_text()
    assert main(["--root", str(tmp_path), "--check"]) == 0
    readme.write_text("no markers here\n")
    assert main(["--root", str(tmp_path), "--check"]) == 2


def test_every_section_lives_in_exactly_one_document() -> None:
    from cetopt.results import DOCUMENTS, SECTIONS, document_of

    placed = [name for names in DOCUMENTS.values() for name in names]
    assert sorted(placed) == sorted(SECTIONS), "each registered section must be placed in exactly one document"
    assert document_of("pretrained") == "README.md"
    with pytest.raises(SectionError, match="in no document"):
        document_of("nope")


def test_the_forward_forms_trace_and_demo_sentences_quote_their_files(tmp_path: Path) -> None:
    from cetopt.results import SectionError
    from cetopt.results.speed import (demo_sentence, forward_forms_sentence, measured_prefix_sentence,
                                      output_traces_sentence)

    assert forward_forms_sentence(tmp_path) is None and output_traces_sentence(tmp_path) is None
    assert demo_sentence(tmp_path) is None
    forms = {"model": "m", "layers": 3, "errors_per_layer": 5, "batch_inputs": 16, "threads": 2, "forward_s": 4.0,
             "double_backward_s": 12.0, "ratio": 3.0, "max_rel_diff": 2e-7}
    (tmp_path / "forms-forward.json").write_text(json.dumps(forms))
    (tmp_path / "forms-forward-system-malloc.json").write_text(json.dumps({**forms, "forward_s": 6.5, "ratio": 1.85}))
    text = forward_forms_sentence(tmp_path)
    assert "4.0 s against 12.0 s" in text and "3.00x" in text and "6.5 s (1.85x)" in text  # type: ignore[operator]
    rows = [{"model": "a", "speedup_at_equal_error": 58.3, "speedup_vs_restricted": None},
            {"model": "b", "speedup_at_equal_error": 4.0, "speedup_vs_restricted": 2.5},
            {"model": "c", "skipped": "softmax is not piecewise linear"}]
    (tmp_path / "trace-output-space.json").write_text(json.dumps({"threads": 2, "rows": rows}))
    text = output_traces_sentence(tmp_path)
    assert "a 58.3x vs shared;" in text and "b 4x vs shared, 2.5x vs restricted" in text  # type: ignore[operator]
    assert "not applicable to c (softmax" in text  # type: ignore[operator]
    assert measured_prefix_sentence(tmp_path) is None
    rows = [{"model": "a", "prefix_s": 36.7, "full_s": 94.1, "ratio": 2.56, "traced": True, "max_abs_diff": 0.0},
            {"model": "b", "prefix_s": 11.7, "full_s": 11.4, "ratio": 0.98, "traced": False, "max_abs_diff": 1e-9}]
    (tmp_path / "measured-prefix.json").write_text(json.dumps({"threads": 2, "rows": rows}))
    text = measured_prefix_sentence(tmp_path)
    assert "a 36.7 s vs 94.1 s (2.56x)" in text and "not traceable" in text and "1.0e-09" in text  # type: ignore[operator]
    (tmp_path / "demo-time.json").write_text(json.dumps({"command": "cetopt demo x", "cpus": 2, "seconds": [243.0, 237.0]}))
    assert "`cetopt demo x` from a cold cache" in demo_sentence(tmp_path) and "243 s / 237 s" in demo_sentence(tmp_path)  # type: ignore[operator]
    (tmp_path / "demo-time.json").write_text("{")
    with pytest.raises(SectionError, match="demo_time.py"):
        demo_sentence(tmp_path)

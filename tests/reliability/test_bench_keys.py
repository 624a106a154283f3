"""Bench cells are keyed by content: same-named problems in two folders are two cells, an edited problem
or solver config is a new cell, and an unchanged one is reused."""

from __future__ import annotations

from pathlib import Path

from cetopt.bench.cell import Cell
from cetopt.bench.store import key_for
from cetopt.problem.io import save_problem
from cetopt.problem.synthetic import synthetic_problem


def test_keys_follow_file_contents_not_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_problem(synthetic_problem(6, seed=1), tmp_path / "a" / "x.json")
    save_problem(synthetic_problem(6, seed=2), tmp_path / "b" / "x.json")
    first, second = (Cell(problem=str(tmp_path / d / "x.json"), solver="dp", budget_avg_bits=3.0) for d in "ab")
    assert key_for(first) != key_for(second)
    same = Cell(problem=str(tmp_path / "a" / "x.json"), solver="dp", budget_avg_bits=3.0)
    before_edit = key_for(first)
    assert key_for(same) == before_edit
    save_problem(synthetic_problem(6, seed=3), tmp_path / "a" / "x.json")  # edited in place
    assert key_for(Cell(problem=str(tmp_path / "a" / "x.json"), solver="dp", budget_avg_bits=3.0)) != before_edit
    config = tmp_path / "s.toml"
    config.write_text('backend = "dp"\n')
    before = key_for(Cell(problem=str(tmp_path / "b" / "x.json"), solver=str(config), budget_avg_bits=3.0))
    config.write_text('backend = "dp"\n[options]\nreduce = false\n')
    after = key_for(Cell(problem=str(tmp_path / "b" / "x.json"), solver=str(config), budget_avg_bits=3.0))
    assert before != after
    limits = {key_for(Cell(problem=first.problem, solver="dp", budget_avg_bits=3.0, time_limit=t)) for t in (1, 2)}
    assert len(limits) == 2

"""Bench figures stay readable at a README's width: panels wrap into rows instead of one long strip."""

from __future__ import annotations

from pathlib import Path

from cetopt.bench.plots import PANELS_PER_ROW, plot_pareto


def _rows(problems: int) -> list[dict]:
    return [{"problem": f"p{i}", "solver": solver, "metric": str(0.9 + 0.01 * k), "packed_ratio": str(4 + k),
             "fp_metric": "0.95"} for i in range(problems) for solver in ("dp", "hawq-v3", "uniform") for k in range(3)]


def test_pareto_panels_wrap_into_rows(tmp_path: Path) -> None:
    from PIL import Image

    assert plot_pareto(tmp_path, _rows(2 * PANELS_PER_ROW)) == ["pareto.png", "pareto.svg"]
    wide, tall = Image.open(tmp_path / "pareto.png").size
    assert wide <= 1300 and tall > wide / 2  # two rows of three, not six panels in a strip
    plot_pareto(tmp_path, _rows(1))
    assert Image.open(tmp_path / "pareto.png").size[0] < 600  # one panel alone stays one panel wide

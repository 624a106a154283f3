"""Matplotlib helpers shared by the proof reports and the bench plots (headless backend; files written atomically)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from cetopt._atomic import atomic_write_bytes


def new_figure(width: float = 5.0, height: float = 3.6) -> tuple[Any, Any]:
    """A figure and axes on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def save_figure(fig: Any, directory: str | os.PathLike[str] | None, stem: str, formats: tuple[str, ...] = ("png",)
                ) -> tuple[str, ...]:
    """Write ``fig`` as ``stem.<fmt>`` in ``directory`` (nothing when directory is None); returns the names."""
    import matplotlib.pyplot as plt

    names = []
    try:
        if directory is None:
            return ()
        for fmt in formats:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=120)
            atomic_write_bytes(Path(directory) / f"{stem}.{fmt}", buffer.getvalue())
            names.append(f"{stem}.{fmt}")
    finally:
        plt.close(fig)
    return tuple(names)


def new_grid(rows: int, cols: int, width: float, height: float) -> tuple[Any, Any]:
    """A figure with a (rows, cols) array of axes on the Agg backend."""
    new_figure()  # selects the backend
    import matplotlib.pyplot as plt

    plt.close("all")
    return plt.subplots(rows, cols, figsize=(width, height), layout="constrained", squeeze=False)


def predicted_vs_measured(ax: Any, series: dict[str, tuple[Any, Any]], *, xlabel: str, title: str,
                          linthresh: float = 1e-4) -> None:
    """Scatter each ``label -> (predicted, measured)`` series on symlog axes with the y = x diagonal."""
    values = [float(v) for xs, ys in series.values() for v in (*xs, *ys)]
    for (label, (xs, ys)), marker in zip(series.items(), "os^vD<>ph*"):
        ax.scatter(xs, ys, label=label, s=18, marker=marker)
    if values:
        ax.plot([min(values), max(values)], [min(values), max(values)], "k--", lw=0.8)
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("measured dL")
    ax.set_title(title)
    ax.legend(fontsize=7)


def per_layer_bars(ax: Any, names: list[str], series: dict[str, list[float]], *, ylabel: str, log: bool = True) -> None:
    """Grouped bars of one value per layer for each ``label -> values`` series (log or symlog scale)."""
    import numpy as np

    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [max(v, 1e-12) if log else v for v in values], width=width,
               label=label)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xticks(x, names, rotation=70, fontsize=6)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)

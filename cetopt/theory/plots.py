"""Matplotlib helpers for the proof report (headless backend; files written atomically)."""

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

"""Wall-clock budgets for backends: a time limit covers the backend's own model building too.

A backend creates a :class:`Deadline` when ``run`` starts and hands the engine only what is left,
minus a reserve for decoding and re-scoring the answer. The documented overhead of a time-limited
solve is therefore at most ``RESERVE_FRACTION * limit + RESERVE_SECONDS`` beyond the engine's own
stopping latency (measured: under 1 s for 10,000 layers x 8 choices on every backend).
"""

from __future__ import annotations

import time

RESERVE_FRACTION = 0.1   # of the limit, kept for the work after the engine returns
RESERVE_SECONDS = 0.05
MIN_ENGINE_SECONDS = 0.05  # an engine is always given at least this long (it then returns its incumbent)


class Deadline:
    """Seconds left of a time limit that started when the object was created (None: no limit)."""

    def __init__(self, limit: float | None) -> None:
        self.start = time.perf_counter()
        self.limit = limit

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float | None:
        """Seconds the engine may use now (never below MIN_ENGINE_SECONDS), or None without a limit."""
        if self.limit is None:
            return None
        reserve = RESERVE_FRACTION * self.limit + RESERVE_SECONDS
        return max(self.limit - reserve - self.elapsed(), MIN_ENGINE_SECONDS)

    def expired(self) -> bool:
        return self.limit is not None and self.elapsed() >= self.limit


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included), from /proc on Linux;
    0.0 where that cannot be read (then a process budget counts from the caller's first clock reading)."""
    import os

    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def process_started() -> float:
    """``time.perf_counter()`` at the moment this process started (see :func:`process_age`)."""
    return time.perf_counter() - process_age()

"""Interleaved timing: the one harness every benchmark uses.

Things compared are run in the same rounds, one after another (A B, then B A, then A B, ...: the order
reverses every round so that drift and the machine's load hit every side alike), after the same warm-up.
Each is reported as min / median / max seconds over the rounds, and every ratio is taken within a round
(t_A[r] / t_B[r]) and then summarised (median, min, max, relative spread), never from timings taken minutes
apart. A machine shared with other tenants also drifts between processes and in phases of a few seconds
(measured here: the same 0.1 s solve ran 0.10 or 0.20 s for seconds at a time, and its median moved 1.4x from
one fresh process to the next), so a benchmark may time each comparison in several fresh processes and pool
their rounds (:func:`merge`), as pyperf does with its worker processes. The machine's load
(os.getloadavg before and after, CPU count, affinity, torch threads) travels with the numbers. Peak memory,
where asked, comes from one extra untimed call under tracemalloc (Python and NumPy allocations; torch's CPU
allocator is not traced), and a subprocess's peak resident set from ``os.wait4`` (:func:`run_process`).

    result = compare({"dp": lambda: solve(p, "dp"), "pulp": lambda: pulp(p)}, rounds=5)
    result.ratio("pulp", "dp").median
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Min / median / max of a sample (seconds, or a dimensionless ratio) and its relative spread.

    ``spread`` = (max - min) / median: 0.2 means the extremes lie 20% of the median apart.
    """

    values: tuple[float, ...]
    min: float
    median: float
    max: float
    spread: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        arr = np.asarray(values, dtype=float)
        if arr.size == 0:
            raise ValueError("a summary needs at least one value")
        median = float(np.median(arr))
        spread = float((arr.max() - arr.min()) / median) if median > 0 else float("inf")
        return cls(tuple(float(v) for v in arr), float(arr.min()), median, float(arr.max()), spread)


@dataclass(frozen=True)
class MachineLoad:
    """The machine's state around a measurement: 1/5/15-minute load averages before and after, logical
    CPUs, CPUs this process may use, and torch's intra-op threads (None when torch is not imported)."""

    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    cpu_count: int
    usable_cpus: int
    torch_threads: int | None
    omp_num_threads: str | None

    @property
    def busy(self) -> bool:
        """True when the 1-minute load exceeded the usable CPUs at either end (others were running)."""
        return max(self.load_before[0], self.load_after[0]) > self.usable_cpus


def machine_state() -> tuple[tuple[float, float, float], int, int, int | None, str | None]:
    """(load averages, cpu count, usable cpus, torch threads, OMP_NUM_THREADS) right now."""
    load = tuple(round(x, 2) for x in os.getloadavg())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch = sys.modules.get("torch")
    threads = int(torch.get_num_threads()) if torch is not None else None
    return load, os.cpu_count() or 1, usable, threads, os.environ.get("OMP_NUM_THREADS")  # type: ignore[return-value]


@dataclass(frozen=True)
class Comparison:
    """Interleaved timings of several things.

    Attributes:
        seconds: name -> Summary of its per-round wall seconds per call (a round times ``number[name]``
            back-to-back calls and divides by that count).
        rounds: number of timed rounds; round r ran the things in ``order`` (reversed when r is odd; counted
            within each process when several are merged).
        warmup: untimed calls of each thing before the first round.
        order: the names in the order of the even rounds.
        peak_bytes: name -> peak traced bytes of one extra untimed call (only when asked).
        load: the machine's state before and after.
        number: name -> calls per timed block (see ``min_block``).
        processes: how many separate processes' rounds are pooled here (:func:`merge`; 1 for one compare).
        part_medians: name -> each process's median seconds (empty for one compare): the spread between
            processes, which pooling averages out and a single process cannot show.
    """

    seconds: dict[str, Summary]
    rounds: int
    warmup: int
    order: tuple[str, ...]
    load: MachineLoad
    peak_bytes: dict[str, int] = field(default_factory=dict)
    number: dict[str, int] = field(default_factory=dict)
    processes: int = 1
    part_medians: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def per_round(self, name: str) -> tuple[float, ...]:
        return self.seconds[name].values

    def ratio(self, numerator: str, denominator: str) -> Summary:
        """t_numerator / t_denominator round by round, summarised."""
        return Summary.of([a / b for a, b in zip(self.per_round(numerator), self.per_round(denominator))])

    def derived(self, fn: Callable[[Mapping[str, float]], float]) -> Summary:
        """A quantity computed from each round's times (``fn({name: seconds})``), summarised over rounds."""
        return Summary.of([fn({k: self.per_round(k)[r] for k in self.seconds}) for r in range(self.rounds)])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sync_noop() -> None:
    return None


@dataclass(frozen=True)
class Adaptive:
    """How :func:`compare` gives short calls and cheap comparisons more samples.

    Attributes:
        min_block: seconds; a thing in ``calibrate`` whose first call (a warm-up call, or one extra untimed
            call when ``warmup`` is 0) took less is called ``ceil(min_block / that)`` times back to back per
            round (at most 10,000), so that millisecond calls are not lost in clock and scheduler noise.
        calibrate: names that may be repeated (default: all).
        min_seconds: after ``rounds`` rounds, keep adding rounds until the timed rounds took this many
            seconds in all (cheap comparisons get more rounds, expensive ones keep ``rounds``) ...
        max_rounds: ... but never more than this many rounds (default: ``rounds``, i.e. no extension).
    """

    min_block: float = 0.0
    calibrate: Sequence[str] | None = None
    min_seconds: float = 0.0
    max_rounds: int | None = None


def compare(things: Mapping[str, Callable[[], Any]], *, rounds: int = 5, warmup: int = 1,
            sync: Callable[[], None] = _sync_noop, memory: bool | Sequence[str] = False,
            after_call: Callable[[str, Any], None] | None = None, adaptive: Adaptive = Adaptive()) -> Comparison:
    """Time each callable once per round, interleaved, after ``warmup`` untimed calls of each.

    Args:
        things: name -> a zero-argument callable (the whole thing timed, nothing else).
        rounds: timed rounds (>= 1; ratios need >= 2 to show a spread).
        warmup: untimed calls of each thing first, in the same interleaved order.
        sync: called before each clock read (``torch.cuda.synchronize`` on a GPU).
        memory: True (every thing) or names: peak bytes traced by tracemalloc in one extra untimed call.
        after_call: ``after_call(name, return_value)`` after each timed block, outside the clock (to keep
            a result, e.g. a SolveResult or a process's peak memory).
        adaptive: repeated calls of short things and extra rounds of cheap comparisons (:class:`Adaptive`).

    Returns:
        A Comparison; ``.ratio(a, b)`` gives per-round ratios of per-call seconds.
    """
    min_block, calibrate = adaptive.min_block, adaptive.calibrate
    min_seconds, max_rounds = adaptive.min_seconds, adaptive.max_rounds
    if not things:
        raise ValueError("nothing to time: pass at least one callable")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    max_rounds = rounds if max_rounds is None else max_rounds
    if max_rounds < rounds or min_seconds < 0:
        raise ValueError(f"max_rounds must be >= rounds and min_seconds >= 0, got max_rounds={max_rounds}, "
                         f"rounds={rounds}, min_seconds={min_seconds}")
    names = tuple(things)
    load_before, cpus, usable, threads, omp = machine_state()
    first: dict[str, float] = {}
    for r in range(warmup):
        for name in (names if r % 2 == 0 else names[::-1]):
            first.setdefault(name, _clocked(things[name], sync)[0])
    number = _numbers(things, names, first, sync, min_block, calibrate)
    times: dict[str, list[float]] = {name: [] for name in names}
    timed = 0.0
    r = 0
    while r < rounds or (timed < min_seconds and r < max_rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            seconds, value = _clocked(things[name], sync, number[name])
            timed += seconds
            times[name].append(seconds / number[name])
            if after_call is not None:
                after_call(name, value)
        r += 1
    peaks = {name: traced_peak_bytes(things[name]) for name in _memory_names(memory, names)}
    load = MachineLoad(load_before, machine_state()[0], cpus, usable, threads, omp)
    return Comparison({n: Summary.of(times[n]) for n in names}, r, warmup, names, load, peaks, number)


def merge(parts: Sequence[Comparison]) -> Comparison:
    """One Comparison from several of the same things, e.g. measured in separate processes: their rounds
    pooled in order (ratios stay per round), load from the first's start to the last's end, the largest
    peak memory, and ``processes`` = the number of parts (their medians stay in ``part_medians``).

    Raises:
        ValueError: no parts, or parts that timed different things.
    """
    if not parts:
        raise ValueError("nothing to merge: pass at least one Comparison")
    names = parts[0].order
    if any(p.order != names for p in parts):
        raise ValueError(f"the parts timed different things: {[list(p.order) for p in parts]}")
    seconds = {n: Summary.of([v for p in parts for v in p.seconds[n].values]) for n in names}
    peaks = {n: max(p.peak_bytes[n] for p in parts if n in p.peak_bytes)
             for n in {n for p in parts for n in p.peak_bytes}}
    first, last = parts[0].load, parts[-1].load
    load = MachineLoad(first.load_before, last.load_after, first.cpu_count, first.usable_cpus, first.torch_threads,
                       first.omp_num_threads)
    medians = {n: tuple(p.seconds[n].median for p in parts) for n in names}
    return Comparison(seconds, sum(p.rounds for p in parts), parts[0].warmup, names, load, peaks,
                      {n: max(p.number.get(n, 1) for p in parts) for n in names}, len(parts), medians)


def _clocked(fn: Callable[[], Any], sync: Callable[[], None], number: int = 1) -> tuple[float, Any]:
    """Seconds for ``number`` back-to-back calls of ``fn`` and the last call's value."""
    sync()
    start = time.perf_counter()
    for _ in range(number):
        value = fn()
    sync()
    return time.perf_counter() - start, value


def _numbers(things: Mapping[str, Callable[[], Any]], names: tuple[str, ...], first: dict[str, float],
             sync: Callable[[], None], min_block: float, calibrate: Sequence[str] | None) -> dict[str, int]:
    number = dict.fromkeys(names, 1)
    if min_block <= 0:
        return number
    for name in (names if calibrate is None else [n for n in names if n in calibrate]):
        seconds = first[name] if name in first else _clocked(things[name], sync)[0]
        number[name] = int(min(10_000, max(1, math.ceil(min_block / max(seconds, 1e-9)))))
    return number


def _memory_names(memory: bool | Sequence[str], names: tuple[str, ...]) -> tuple[str, ...]:
    if memory is True:
        return names
    if memory is False:
        return ()
    unknown = [m for m in memory if m not in names]
    if unknown:
        raise ValueError(f"memory names {unknown} are not among the things timed {list(names)}")
    return tuple(memory)


def traced_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated through Python's allocators (NumPy included) during one call of ``fn``."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1] - base)
    finally:
        if not was_tracing:
            tracemalloc.stop()


@dataclass(frozen=True)
class ProcessRun:
    """One finished subprocess: wall seconds from spawn to exit, its peak resident set (bytes, from the
    kernel's ru_maxrss of that child alone), exit code and output."""

    seconds: float
    max_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str


class ProcessError(RuntimeError):
    """A benchmarked subprocess exited with an error; the message has its command and stderr tail."""


# A small launcher runs the command as ITS child and reports that child's peak RSS: a child forked straight from
# this (possibly large) process would count our pages in its ru_maxrss, which survives exec.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_process(argv: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True) -> ProcessRun:
    """Run ``argv`` to completion; its wall time and peak RSS (``os.wait4`` on that process alone, started from a
    small launcher so that this process's own memory is not counted; the wall time includes the launcher's
    Python start-up, about 0.02-0.05 s).

    Raises:
        ProcessError: ``check`` and the exit code is not 0.
    """
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, report.name, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=None if env is None else dict(env))
        stdout, stderr = proc.communicate()
        seconds = time.perf_counter() - start
        text = report.read().strip()
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    rss = int(text or 0) * (1 if sys.platform == "darwin" else 1024)
    if check and proc.returncode != 0:
        raise ProcessError(f"{' '.join(argv)} exited with {proc.returncode}: {stderr.strip()[-500:]}")
    return ProcessRun(seconds, rss, proc.returncode, stdout, stderr)



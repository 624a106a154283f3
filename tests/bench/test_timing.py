"""The interleaved timing harness, checked against a fake clock (exact times) and real allocations."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.bench import timing
from cetopt.bench.timing import Adaptive, ProcessError, Summary, compare, run_process, traced_peak_bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scripted(clock: FakeClock, durations: list[float], log: list[str], name: str):
    """A callable that advances the fake clock by the next scripted duration (warm-up calls take 100 s,
    so a harness that timed them would be caught)."""
    calls = iter(durations)

    def run() -> str:
        log.append(name)
        clock.now += next(calls)
        return name

    return run


@settings(max_examples=50, deadline=None)
@given(rounds=st.integers(1, 6), warmup=st.integers(0, 2), data=st.data())
def test_times_and_ratios_are_per_round(rounds: int, warmup: int, data: st.DataObject) -> None:
    clock = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing.time, "perf_counter", clock)
        check_fake_clock_run(clock, rounds, warmup, data)


def check_fake_clock_run(clock: FakeClock, rounds: int, warmup: int, data: st.DataObject) -> None:
    durations = st.floats(0.001, 10.0)
    a = data.draw(st.lists(durations, min_size=rounds, max_size=rounds))
    b = data.draw(st.lists(durations, min_size=rounds, max_size=rounds))
    log: list[str] = []
    result = compare({"a": scripted(clock, [100.0] * warmup + a, log, "a"),
                      "b": scripted(clock, [100.0] * warmup + b, log, "b")}, rounds=rounds, warmup=warmup)
    assert result.per_round("a") == pytest.approx(a)
    assert result.per_round("b") == pytest.approx(b)
    assert result.seconds["a"].median == pytest.approx(float(np.median(a)))
    assert result.seconds["b"].min == pytest.approx(min(b)) and result.seconds["b"].max == pytest.approx(max(b))
    ratios = [x / y for x, y in zip(a, b)]
    assert result.ratio("a", "b").values == pytest.approx(ratios)
    assert result.ratio("a", "b").median == pytest.approx(float(np.median(ratios)))
    total = result.derived(lambda t: t["a"] + 2 * t["b"])
    assert total.values == pytest.approx([x + 2 * y for x, y in zip(a, b)])
    # interleaved, the order reversing every round, warm-up alike
    expected = []
    for r in range(warmup):
        expected += ["a", "b"] if r % 2 == 0 else ["b", "a"]
    for r in range(rounds):
        expected += ["a", "b"] if r % 2 == 0 else ["b", "a"]
    assert log == expected


def test_after_call_sees_each_timed_value() -> None:
    seen: list[tuple[str, object]] = []
    result = compare({"x": lambda: 1, "y": lambda: 2}, rounds=3, warmup=1,
                     after_call=lambda name, value: seen.append((name, value)))
    assert seen == [("x", 1), ("y", 2), ("y", 2), ("x", 1), ("x", 1), ("y", 2)]
    assert result.rounds == 3 and result.order == ("x", "y")


def test_summary_matches_numpy() -> None:
    values = [3.0, 1.0, 2.0, 10.0]
    s = Summary.of(values)
    assert (s.min, s.median, s.max) == (1.0, float(np.median(values)), 10.0)
    assert s.spread == pytest.approx((10.0 - 1.0) / 2.5)
    with pytest.raises(ValueError):
        Summary.of([])


def test_load_is_recorded() -> None:
    result = compare({"x": lambda: None}, rounds=1)
    load = result.load
    assert load.cpu_count >= 1 and 1 <= load.usable_cpus <= load.cpu_count
    assert len(load.load_before) == 3 and len(load.load_after) == 3
    assert load.torch_threads is None or load.torch_threads >= 1
    assert result.to_dict()["load"]["cpu_count"] == load.cpu_count


def test_peak_memory_sees_a_numpy_allocation() -> None:
    size = 8_000_000
    peak = traced_peak_bytes(lambda: np.ones(size // 8).sum())
    assert size <= peak < 2 * size
    result = compare({"big": lambda: np.ones(size // 8).sum(), "small": lambda: None}, rounds=1, memory=["big"])
    assert result.peak_bytes["big"] >= size and "small" not in result.peak_bytes


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="nothing to time"):
        compare({})
    with pytest.raises(ValueError, match="rounds"):
        compare({"x": lambda: None}, rounds=0)
    with pytest.raises(ValueError, match="memory names"):
        compare({"x": lambda: None}, rounds=1, memory=["y"])


def test_process_peak_rss_and_output() -> None:
    mib = 200
    run = run_process([sys.executable, "-c", f"b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); "
                       "print('done')"])
    assert run.returncode == 0 and run.stdout.strip() == "done"
    assert run.max_rss_bytes >= mib * 2**20
    small = run_process([sys.executable, "-c", "pass"])
    assert small.max_rss_bytes < run.max_rss_bytes  # per child, not the maximum over all children so far
    assert run.seconds > 0


def test_process_failure_raises_with_stderr() -> None:
    with pytest.raises(ProcessError, match="boom"):
        run_process([sys.executable, "-c", "import sys; sys.exit('boom')"])
    run = run_process([sys.executable, "-c", "raise SystemExit(3)"], check=False)
    assert run.returncode == 3


def test_short_calls_are_repeated_to_fill_a_block() -> None:
    clock = FakeClock()
    log: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing.time, "perf_counter", clock)
        # warm-up call 0.01 s -> 25 calls per round for a 0.25 s block; "slow" (1 s) stays at 1
        fast = scripted(clock, [0.01] + [0.002] * 50, log, "fast")
        slow = scripted(clock, [1.0, 3.0, 5.0], log, "slow")
        result = compare({"fast": fast, "slow": slow}, rounds=2, warmup=1, adaptive=Adaptive(min_block=0.25))
    assert result.number == {"fast": 25, "slow": 1}
    assert result.per_round("fast") == pytest.approx([0.002, 0.002])  # per call
    assert result.per_round("slow") == pytest.approx([3.0, 5.0])
    assert log.count("fast") == 1 + 2 * 25 and log.count("slow") == 3


def test_calibration_without_warmup_costs_one_extra_call_of_the_named_things() -> None:
    counts = {"a": 0, "b": 0}

    def bump(name: str):
        def run() -> None:
            counts[name] += 1
        return run

    result = compare({"a": bump("a"), "b": bump("b")}, rounds=2, warmup=0,
                     adaptive=Adaptive(min_block=1e-4, calibrate=["a"]))
    assert result.number["b"] == 1 and counts["b"] == 2
    assert counts["a"] == 1 + 2 * result.number["a"]


def test_min_seconds_adds_rounds_up_to_max_rounds() -> None:
    clock = FakeClock()
    log: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing.time, "perf_counter", clock)
        # each round takes 1 + 2 = 3 s: 10 s asks for 4 rounds (12 s), max_rounds 6 allows them
        result = compare({"a": scripted(clock, [1.0] * 20, log, "a"), "b": scripted(clock, [2.0] * 20, log, "b")},
                         rounds=2, warmup=0, adaptive=Adaptive(min_seconds=10.0, max_rounds=6))
        assert result.rounds == 4 and len(result.per_round("a")) == 4
        # the cap wins over the time asked for
        capped = compare({"a": scripted(clock, [1.0] * 20, log, "a"), "b": scripted(clock, [2.0] * 20, log, "b")},
                         rounds=2, warmup=0, adaptive=Adaptive(min_seconds=100.0, max_rounds=3))
        assert capped.rounds == 3
        # without max_rounds, min_seconds cannot extend the run
        plain = compare({"a": scripted(clock, [1.0] * 20, log, "a")}, rounds=2, warmup=0,
                        adaptive=Adaptive(min_seconds=100.0))
        assert plain.rounds == 2
    with pytest.raises(ValueError, match="max_rounds"):
        compare({"a": lambda: None}, rounds=3, adaptive=Adaptive(max_rounds=2))


@settings(max_examples=30, deadline=None)
@given(parts=st.lists(st.lists(st.tuples(st.floats(0.001, 10.0), st.floats(0.001, 10.0)), min_size=1, max_size=5),
                      min_size=1, max_size=4))
def test_merge_pools_rounds_and_keeps_ratios_per_round(parts: list[list[tuple[float, float]]]) -> None:
    clock = FakeClock()
    comparisons = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing.time, "perf_counter", clock)
        for rounds in parts:
            log: list[str] = []
            comparisons.append(compare({"a": scripted(clock, [a for a, _ in rounds], log, "a"),
                                        "b": scripted(clock, [b for _, b in rounds], log, "b")},
                                       rounds=len(rounds), warmup=0))
    merged = timing.merge(comparisons)
    pooled = [pair for rounds in parts for pair in rounds]
    assert merged.rounds == len(pooled) and merged.processes == len(parts)
    assert merged.per_round("a") == pytest.approx([a for a, _ in pooled])
    assert merged.ratio("a", "b").values == pytest.approx([a / b for a, b in pooled])
    assert merged.part_medians["b"] == pytest.approx([float(np.median([b for _, b in r])) for r in parts])
    assert merged.load.load_before == comparisons[0].load.load_before
    assert merged.load.load_after == comparisons[-1].load.load_after


def test_merge_refuses_nothing_and_different_things() -> None:
    with pytest.raises(ValueError, match="nothing to merge"):
        timing.merge([])
    one = compare({"a": lambda: None}, rounds=1, warmup=0)
    other = compare({"b": lambda: None}, rounds=1, warmup=0)
    with pytest.raises(ValueError, match="different things"):
        timing.merge([one, other])

"""cetopt.curvature.allocator: glibc malloc keeps freed memory when asked, and the CLI asks unless --system-malloc."""

from __future__ import annotations

import argparse
import platform

import pytest

import cetopt.curvature.allocator as allocator
from cetopt.cli import _configure_torch, build_parser


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_settings() -> None:
    assert allocator.keep_freed_memory() is True


@pytest.mark.parametrize(("flag", "expected"), [([], 1), (["--system-malloc"], 0)])
def test_the_cli_keeps_freed_memory_unless_told_not_to(monkeypatch: pytest.MonkeyPatch, flag: list[str],
                                                      expected: int) -> None:
    calls: list[int] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    # the rest of the set-up is process-wide (torch threads, progress bars): kept out of the other tests
    monkeypatch.setattr("cetopt.curvature.threads.configure_threads", lambda threads: 1)
    monkeypatch.setattr("cetopt.curvature.progress.configure_progress", lambda enabled: None)
    args = build_parser().parse_args([*flag, "--threads", "1", "extract", "digits-mlp", "--out", "x.json"])
    assert isinstance(args, argparse.Namespace)
    _configure_torch(args)
    assert len(calls) == expected

"""Keep freed memory in the process (glibc malloc), so that large temporaries stop costing page faults.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it
to the kernel on ``free``; the next one page-faults and zero-fills the same pages again. Curvature on a
224x224 CNN allocates activations of 50-80 MiB per op, thousands of times: in ``cetopt demo mobilenetv2``
the kernel took 2 of its 9.7 CPU minutes (``time``: sys 1m57s). :func:`keep_freed_memory` sets
``M_MMAP_MAX = 0`` (every block from the heap) and a large ``M_TRIM_THRESHOLD`` (freed heap memory stays), the
in-process equivalent of the jemalloc/tcmalloc advice of PyTorch's CPU performance tuning guide. The
process keeps its peak memory instead of returning it. Measured in benchmarks/forms_forward.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value mallopt takes (an int)


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory (see the module docstring); True when it took effect, False on
    another C library or operating system (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        log.debug("malloc tuning skipped: no glibc mallopt")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    log.debug("malloc tuning %s: M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB", "set" if done else "refused")
    return done

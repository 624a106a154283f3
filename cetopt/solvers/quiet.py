"""Keep native solver libraries off stdout.

HiGHS (inside SciPy, highspy and CVXPY) prints lines such as
"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();" with C printf, and OR-Tools'
SCIP wrapper prints "pressed CTRL-C" on an interrupt: Python cannot catch these, so the file descriptor
itself is redirected while an engine runs. Without ``-v`` their output goes to /dev/null, with ``-v``
(DEBUG logging) to stderr; stdout stays for cetopt's own results (``--format json`` stays one object).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()


def _flush_c_stdio() -> None:
    """Flush C stdio buffers, so text a library printed goes where fd 1 pointed when it printed."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
_depth = 0


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Redirect file descriptor 1 to stderr (DEBUG logging) or /dev/null for the duration of the block."""
    global _depth
    with _lock:
        _depth += 1
        outer = _depth == 1
    if not outer:
        try:
            yield
        finally:
            with _lock:
                _depth -= 1
        return
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    _flush_c_stdio()
    verbose = logging.getLogger("cetopt").isEnabledFor(logging.DEBUG)
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (embedded interpreters): nothing to protect
        saved = None
    target = os.dup(2) if verbose else os.open(os.devnull, os.O_WRONLY)
    try:
        if saved is not None:
            os.dup2(target, 1)
        yield
    finally:
        _flush_c_stdio()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
        os.close(target)
        with _lock:
            _depth -= 1

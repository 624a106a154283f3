"""How many CPU threads torch uses (``cetopt --threads``).

torch's default is one intra-op thread per core, whatever else runs. On a busy machine that
oversubscribes the cores, and a Hessian-vector product slows down several-fold when its threads wait for cores
other jobs hold. The default here is therefore the number of *free* cores: the cores this process may use minus the 1-minute load average (rounded), at least 1, and
divided among the ranks of one machine under torchrun (LOCAL_WORLD_SIZE). Inter-op threads are set to 1:
cetopt runs one op at a time, and a second pool only competes with the first.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """min(cores, free cores) / ranks on this machine, at least 1 (see the module docstring)."""
    cores = available_cores()
    try:
        busy = int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        busy = 0
    free = max(1, min(cores, cores - busy))
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, free // local_ranks)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`) and inter-op threads to 1.

    Returns the number of intra-op threads set. Raises ValueError for ``threads < 1``.
    """
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    count = threads if threads is not None else default_threads()
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; later calls keep the first value
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
    log.info("torch threads: %d intra-op, %d inter-op", torch.get_num_threads(), torch.get_num_interop_threads())
    return count

"""Where ``cetopt bench`` runs its cells: a :class:`concurrent.futures.Executor` chosen by a short spec.

- ``None`` / ``"local"``: local worker processes (``ProcessPoolExecutor(max_workers=jobs)``).
- ``"dask://HOST:PORT"``: a running Dask distributed scheduler (``dask scheduler`` + ``dask worker``
  on each machine, or a LocalCluster); cells become Dask tasks through ``Client.get_executor()``.
  Install with ``pip install cetopt[distributed]``. The workers must import the same cetopt and see the
  problem and solver files at the same paths (a shared file system, the same working directory).

Either way the submitting process writes each finished cell's file atomically as results arrive, so an
interrupted run resumes from the cells already on disk, whichever executor ran them. Local workers exit
when the process that started them dies (a watchdog thread in each), so a killed bench leaves none behind.
A scheduler that has no worker within the timeout is reported, not waited on forever.

Security: a Dask scheduler runs whatever it is sent. Keep it on loopback unless the network is trusted::

    dask scheduler --host 127.0.0.1 --port 8786 --dashboard-address 127.0.0.1:8787
    dask worker tcp://127.0.0.1:8786 --host 127.0.0.1
    cetopt bench --executor dask://127.0.0.1:8786 ...

(across machines: an SSH tunnel to the scheduler's port, or Dask's TLS options, ``--tls-ca-file``,
``--tls-cert``, ``--tls-key`` on the scheduler and workers with a ``tls://`` client configured through
``distributed.comm.tls.*``; this executor's ``dask://HOST:PORT`` speaks plain TCP).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

from cetopt.errors import ProblemError

log = logging.getLogger(__name__)

DASK_SCHEME = "dask://"


def parse_executor(spec: str | None) -> tuple[str, str | None]:
    """``(kind, address)``: ("local", None) or ("dask", "tcp://HOST:PORT").

    Raises:
        ProblemError(field="--executor"): for anything else, naming the accepted forms.
    """
    if spec is None or spec in ("", "local"):
        return "local", None
    if spec.startswith(DASK_SCHEME):
        address = spec[len(DASK_SCHEME):]
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ProblemError(f"expected dask://HOST:PORT (e.g. dask://127.0.0.1:8786), got {spec!r}",
                               field="--executor")
        return "dask", f"tcp://{address}"
    raise ProblemError(f"unknown executor {spec!r}; use 'local' or dask://HOST:PORT", field="--executor")


@contextmanager
def open_executor(spec: str | None = None, *, jobs: int = 1, timeout: float = 30.0) -> Iterator[Executor]:
    """An executor for ``spec`` (see the module docstring), shut down on exit.

    Args:
        spec: None or "local" (processes on this machine) or "dask://HOST:PORT".
        jobs: local worker processes (ignored for Dask: the cluster's workers decide).
        timeout: seconds to wait for the Dask scheduler before failing.

    Raises:
        ProblemError(field="--executor"): a bad spec, dask not installed, or no scheduler at the address.
    """
    kind, address = parse_executor(spec)
    if kind == "local":
        with ProcessPoolExecutor(max_workers=max(1, jobs), initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            yield pool
        return
    client = _dask_client(address, timeout)  # type: ignore[arg-type]
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError) as err:
            raise ProblemError(f"the Dask scheduler at {address} has no worker after {timeout:g} s ({err or 'timed out'});"
                               f" start one with 'dask worker {address}'", field="--executor") from None
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("dask scheduler %s with %d workers", address, workers)
        yield client.get_executor()
    finally:
        client.close()


def exit_with_parent(parent: int, period: float = 0.5) -> None:
    """Worker initializer: a daemon thread that ends this worker (os._exit) once ``parent`` is gone, so a
    killed bench leaves no workers running cells nobody will collect."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        os._exit(1)

    threading.Thread(target=watch, name="cetopt-exit-with-parent", daemon=True).start()


def _dask_client(address: str, timeout: float) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise ProblemError("the Dask executor needs dask[distributed]: pip install 'cetopt[distributed]'",
                           field="--executor") from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ProblemError(f"no Dask scheduler answered at {address} within {timeout:g} s ({err}); start one "
                           "with 'dask scheduler' and 'dask worker ADDRESS'", field="--executor") from None

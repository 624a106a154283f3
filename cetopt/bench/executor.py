"""Where ``cetopt bench`` runs its cells: a :class:`concurrent.futures.Executor` chosen by a short spec.

- ``None`` / ``"local"``: local worker processes (``ProcessPoolExecutor(max_workers=jobs)``).
- ``"dask://HOST:PORT"``: a running Dask distributed scheduler (``dask scheduler`` + ``dask worker``
  on each machine, or a LocalCluster); cells become Dask tasks through ``Client.get_executor()``.
  Install with ``pip install cetopt[distributed]``. The workers must import the same cetopt and see the
  problem and solver files at the same paths (a shared file system, the same working directory).

Either way the submitting process writes each finished cell's file atomically as results arrive, so an
interrupted run resumes from the cells already on disk, whichever executor ran them.
"""

from __future__ import annotations

import logging
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
        with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
            yield pool
        return
    client = _dask_client(address, timeout)  # type: ignore[arg-type]
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("dask scheduler %s with %d workers", address, workers)
        yield client.get_executor()
    finally:
        client.close()


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

"""Progress bars on stderr (tqdm), one per phase, with an ETA; they appear only for work that runs more than
a couple of seconds, and only on rank 0 under torch.distributed.

Library callers choose with ``show_progress``; the command line calls :func:`configure_progress` so
that every phase shows a bar at the default verbosity, including phases a builder runs with
``show_progress=False``: a long extraction must not look like a hung one.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

_FORCED: bool | None = None
DELAY_S = 2.0


def configure_progress(*, enabled: bool | None) -> None:
    """Force bars on (True) or off (False) for every phase, or give the choice back to callers (None)."""
    global _FORCED
    _FORCED = enabled


def progress(*, total: int | None, desc: str, disable: bool = False, iterable: Any = None) -> Any:
    """A tqdm bar on stderr (with ETA) that shows after DELAY_S seconds and is cleared when closed."""
    from cetopt import distributed

    show = (not disable) if _FORCED is None else _FORCED
    show = show and distributed.is_rank_zero()
    return tqdm(iterable, total=total, desc=desc, disable=not show, file=sys.stderr, delay=DELAY_S, leave=False,
                dynamic_ncols=True)

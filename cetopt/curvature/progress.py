"""Progress bars on stderr (tqdm), shown only for work that takes more than about a second."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(*, total: int | None, desc: str, disable: bool = False) -> Any:
    """A tqdm bar on stderr that appears after one second and never in non-interactive logs' way."""
    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, delay=1.0, leave=False,
                dynamic_ncols=True)

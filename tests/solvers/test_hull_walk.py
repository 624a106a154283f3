"""The hull walk's step order (cetopt.solvers.hull): by slope, ties by group then deeper step first, whatever
the block size its temporaries are built in; checked against a 3-key lexsort of the steps and a one-block walk."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.solvers import hull


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 8), st.integers(1, 7))
def test_steps_come_in_slope_group_depth_order_in_any_block_size(seed: int, groups: int, width: int,
                                                                  block: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 20, size=(groups, width)).astype(float)  # small integers: many tied slopes
    y = rng.integers(0, 6, size=(groups, width)).astype(float)
    x[:, 1:][rng.random((groups, width - 1)) < 0.2] = np.inf  # padding
    walk = hull.hull_walk(x, y)
    assert np.array_equal(np.lexsort((-walk.position, walk.group, walk.slope)), np.arange(len(walk.group)))
    default, hull.CHUNK_ROWS = hull.CHUNK_ROWS, block
    try:
        blocked = hull.hull_walk(x, y)
    finally:
        hull.CHUNK_ROWS = default
    for key in ("hull", "length", "group", "position", "d_resource", "d_loss"):
        assert np.array_equal(getattr(walk, key), getattr(blocked, key))
    assert (walk.top_resource, walk.top_loss) == (blocked.top_resource, blocked.top_loss)

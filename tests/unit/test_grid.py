"""The streaming grid collector keeps only what the grid can use, and builds the same grid."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from filtercast.grid import GridCollector, grid_layout
from filtercast_server.jobs import FilterOutcome
from filtercast_server.params import GridParams


@st.composite
def outcomes(draw: st.DrawFn) -> list[FilterOutcome]:
    count = draw(st.integers(1, 60))
    indices = draw(st.permutations(range(count)))
    result = []
    for index in indices:
        dead = draw(st.booleans())
        loss = draw(st.floats(-10, 1000, allow_nan=False))
        image = None if dead else np.full((2, 2, 3), index % 256, np.uint8)
        result.append(FilterOutcome(index, loss, dead, image, 1, 0.0))
    return result


@given(
    outcomes(),
    st.sampled_from(["loss", "index"]),
    st.none() | st.integers(1, 8),
)
def test_the_collector_builds_the_grid_of_all_outcomes(items, order, n) -> None:
    params = GridParams(n=n, margin=1, order=order)
    collector = GridCollector(params, len(items))
    for outcome in items:
        collector.add(outcome)
    assert collector.held <= collector.tiles <= len(items)
    expected_n, expected_order = grid_layout(items, params)
    grid = collector.build()
    if expected_n == 0:
        assert grid is None
        return
    assert (grid.n, grid.order) == (expected_n, expected_order)
    tile = grid.image[:2, :2]
    assert (tile == expected_order[0] % 256).all()


def test_memory_is_bounded_by_the_grid_not_the_filter_count() -> None:
    collector = GridCollector(GridParams(n=2, margin=5, order="loss"), 500)
    for index in range(500):
        collector.add(
            FilterOutcome(index, float(index), False, np.zeros((4, 4, 3), np.uint8), 1, 0)
        )
    assert collector.tiles == 4 and collector.held == 4
    assert collector.build().order == [499, 498, 497, 496]

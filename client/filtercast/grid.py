"""Choosing and stitching the grid of best filters: one rule for the server and the client.

The server stitches a request's grid as its filters stream past; a client
that spreads one request over several servers stitches the merged stream's
grid itself, by the same rule, so both grids are the same picture. Anything
with a picture's index, loss, dead flag and image is a picture here (the
engine's outcomes, the client's FilterImages), and anything with n, margin
and order is a grid's layout (the server's GridParams, a request's values).
"""

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

import filtercast_native as native


class Picture(Protocol):
    """A finished filter as the grid sees it."""

    @property
    def index(self) -> int:
        """The filter's (or picture's) number."""

    @property
    def loss(self) -> float:
        """The objective it reached: higher is better."""

    @property
    def dead(self) -> bool:
        """Whether it never came alive (no picture)."""

    @property
    def image(self) -> np.ndarray | None:
        """The uint8 (H, W, C) picture, None when dead."""


class Layout(Protocol):
    """How a grid is laid out."""

    @property
    def n(self) -> int | None:
        """Pictures per side; None: as many as fit."""

    @property
    def margin(self) -> int:
        """Pixels between pictures."""

    @property
    def order(self) -> str:
        """How pictures are ranked: "loss" (best first) or "index"."""


@dataclass(frozen=True)
class GridImage:
    """The stitched grid and how it was laid out."""

    image: np.ndarray  # uint8 (H, W, 3)
    n: int
    margin: int
    order: list[int]  # filter indices, row-major


def _rank(outcome: Picture, grid: Layout) -> tuple:
    """Sort key: best first (highest loss, or lowest index)."""
    if grid.order == "loss":
        return (-outcome.loss, outcome.index)
    return (outcome.index,)


def grid_layout(outcomes: Sequence[Picture], grid: Layout) -> tuple[int, list[int]]:
    """Side n and the filter indices to place, best first (or in index order).

    n is the preset's n, reduced to floor(sqrt(live filters)) when fewer are
    alive; 0 when none is.
    """
    live = sorted(
        (o for o in outcomes if not o.dead and o.image is not None),
        key=lambda o: _rank(o, grid),
    )
    fit = math.isqrt(len(live))
    n = fit if grid.n is None else min(grid.n, fit)
    return n, [o.index for o in live[: n * n]]


class GridCollector:
    """Keeps only the pictures a request's grid can use while its filters stream past.

    A grid holds at most `tiles` pictures (n², with n the preset's or the
    largest the request's filter count allows), and it always takes the best
    ones, so any picture outside the best `tiles` seen so far can be let go:
    a request's memory stays bounded by its grid, not by its filter count.
    """

    def __init__(self, grid: Layout, filters: int) -> None:
        self.grid = grid
        n = math.isqrt(filters) if grid.n is None else grid.n
        self.tiles = min(n * n, filters)
        self._best: list[tuple[tuple, Picture]] = []  # a heap, worst of the best on top

    @property
    def held(self) -> int:
        """Pictures kept so far (never more than `tiles`)."""
        return len(self._best)

    def add(self, outcome: Picture) -> None:
        """Consider one finished filter."""
        if outcome.dead or outcome.image is None:
            return
        # heapq is a min-heap: negate the rank so the worst kept picture is on top.
        entry = (tuple(-x for x in _rank(outcome, self.grid)), outcome)
        if len(self._best) < self.tiles:
            heapq.heappush(self._best, entry)
        elif entry[0] > self._best[0][0]:
            heapq.heapreplace(self._best, entry)

    def build(self) -> GridImage | None:
        """Stitch the grid of the best live filters; None when no filter is alive."""
        # The best min(tiles, live) pictures: grid_layout picks n and the order as it
        # would from every outcome.
        kept = [outcome for _, outcome in self._best]
        n, order = grid_layout(kept, self.grid)
        if n == 0:
            return None
        by_index = {o.index: o.image for o in kept if o.image is not None}
        tiles = np.stack([by_index[i] for i in order])
        image = native.stitch(tiles, n=n, margin=self.grid.margin)
        return GridImage(image=image, n=n, margin=self.grid.margin, order=order)


def build_grid(outcomes: Iterable[Picture], grid: Layout) -> GridImage | None:
    """Stitch the grid of the best live filters; None when no filter is alive."""
    outcomes = list(outcomes)
    collector = GridCollector(grid, len(outcomes))
    for outcome in outcomes:
        collector.add(outcome)
    return collector.build()

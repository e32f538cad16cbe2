"""Choosing and stitching the grid of best filters."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import filtercast_native as native
from filtercast_server.ascent import FilterOutcome
from filtercast_server.presets import AscentParams


@dataclass(frozen=True)
class GridImage:
    """The stitched grid and how it was laid out."""

    image: np.ndarray  # uint8 (H, W, 3)
    n: int
    margin: int
    order: list[int]  # filter indices, row-major


def grid_layout(outcomes: Sequence[FilterOutcome], params: AscentParams) -> tuple[int, list[int]]:
    """Side n and the filter indices to place, best first (or in index order).

    n is the preset's n, reduced to floor(sqrt(live filters)) when fewer are
    alive; 0 when none is.
    """
    live = [o for o in outcomes if not o.dead and o.image is not None]
    if params.grid_order == "loss":
        live.sort(key=lambda o: (-o.loss, o.index))
    else:
        live.sort(key=lambda o: o.index)
    fit = math.isqrt(len(live))
    n = fit if params.grid_n is None else min(params.grid_n, fit)
    return n, [o.index for o in live[: n * n]]


def build_grid(outcomes: Sequence[FilterOutcome], params: AscentParams) -> GridImage | None:
    """Stitch the grid of the best live filters; None when no filter is alive."""
    n, order = grid_layout(outcomes, params)
    if n == 0:
        return None
    by_index = {o.index: o.image for o in outcomes if o.image is not None}
    tiles = np.stack([by_index[i] for i in order])
    image = native.stitch(tiles, n=n, margin=params.grid_margin)
    return GridImage(image=image, n=n, margin=params.grid_margin, order=order)

"""The plain values that cross module boundaries: precision, plans, jobs, outcomes.

No TensorFlow here: the API, the wire conversions, planning and the scheduler
import these and stay importable (and unit-testable) without it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from filtercast_server.params import AscentParams, GridParams


class Precision(StrEnum):
    """Compute precision of the network; the image itself always stays float32."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


@dataclass(frozen=True)
class Plan:
    """One request's work: resolved parameters, grid, precision, filters and seed."""

    params: AscentParams
    grid: GridParams
    precision: Precision  # resolved: FLOAT32 or BFLOAT16
    filters: tuple[int, ...]
    seed: int


@dataclass
class FilterOutcome:
    """One finished filter: its picture (None when dead) and how it got there."""

    index: int
    loss: float
    dead: bool
    image: np.ndarray | None  # uint8 (H, W, C)
    steps: int
    seconds: float
    revived: int = 0  # restarts from fresh noise before it came alive
    cached: bool = False  # served from the result cache, not computed for this request
    png: bytes | None = None  # the picture as PNG when it came so (the cache): not re-encoded


@dataclass(eq=False)
class Job:
    """One filter to render for one request; the engine never looks at `owner`.

    `followers` are other requests waiting for the same picture (same cache
    `key`): the job is computed once and delivered to each of them.
    """

    index: int
    seed: int
    owner: Any = None
    is_cancelled: Callable[[], bool] = lambda: False
    key: str = ""
    followers: list[Any] = field(default_factory=list)


# Returns up to n jobs to start now (fewer, or none, is fine).
JobSource = Callable[[int], list[Job]]
# The jobs that ended in one step, each with its outcome (None: dropped, cancelled).
Ended = list[tuple[Job, FilterOutcome | None]]


class EngineObserver:
    """Hooks for metrics; the default does nothing."""

    def on_step(
        self, params: AscentParams, precision: Precision, rows: int, seconds: float
    ) -> None:
        """One compiled step ran on `rows` rows."""

    def on_deprocess(self, images: int, seconds: float) -> None:
        """The native module deprocessed `images` finished pictures."""

    def on_restart(self, params: AscentParams) -> None:
        """A filter dead at its first step restarted from fresh noise (revive)."""

    def on_model(self, name: str, parameter_bytes: int) -> None:
        """A model is resident, its weights (every precision variant) this many bytes."""

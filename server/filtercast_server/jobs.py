"""The plain values that cross module boundaries: precision, plans, jobs, outcomes.

No TensorFlow here: the API, the wire conversions, planning and the scheduler
import these and stay importable (and unit-testable) without it.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from filtercast_server.accentuation import StartImage
from filtercast_server.objectives import (
    Structure,
    Target,
    channel_target,
    plain_structure,
    structure_of,
)
from filtercast_server.params import AscentParams, GridParams


class Precision(StrEnum):
    """Compute precision of the network; the image itself always stays float32."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


@dataclass(frozen=True)
class Plan:
    """One request's work: resolved parameters, grid, precision, pictures and seed.

    A plain request's `filters` are the layer's channels. With `targets`
    (objectives, diversity, interpolation) picture i maximizes targets[i] and
    `filters` lists the pictures' numbers, 0..len(targets)-1 (or some of them).
    """

    params: AscentParams
    grid: GridParams
    precision: Precision  # resolved: FLOAT32 or BFLOAT16
    filters: tuple[int, ...]
    seed: int
    targets: tuple[Target, ...] = ()
    start: StartImage | None = None  # accentuation: every picture starts from it
    preview_every: int = 0  # steps between previews of a picture in flight; 0: none

    def target(self, index: int) -> Target:
        """What picture `index` maximizes."""
        return self.targets[index] if self.targets else channel_target(self.params.layer, index)

    @functools.cached_property
    def structure(self) -> Structure:
        """The loss every picture of the request fits (part of its batches' key)."""
        found = structure_of(self.targets) if self.targets else plain_structure(self.params.layer)
        if self.start is not None and self.start.pull > 0:
            return dataclasses.replace(found, pull=self.start.space)
        return found

    def units(self, indices: Iterable[int]) -> list[list[int]]:
        """`indices` in the units they run as: a group's members together, every other alone."""
        found: list[list[int]] = []
        previous = None
        for index in indices:
            target = self.target(index)
            group = (target.target, target.group) if target.group is not None else None
            if found and group is not None and group == previous:
                found[-1].append(index)
            else:
                found.append([index])
            previous = group
        return found

    def jobs(self, indices: Iterable[int], **fields: Any) -> list["Job"]:
        """A job per picture of `indices`; a group's members share one fresh group token."""
        tokens: dict[int, object] = {}
        jobs = []
        for index in indices:
            target = self.target(index)
            token = tokens.setdefault(target.target, object()) if target.group else None
            jobs.append(
                Job(
                    index,
                    self.seed,
                    target=target,
                    group=token,
                    start=self.start,
                    preview_every=self.preview_every,
                    **fields,
                )
            )
        return jobs


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
    curve: tuple[float, ...] = ()  # the objective before each step (none when cached)


@dataclass(frozen=True)
class FilterPreview:
    """A picture in flight, as it is after `step` steps (droppable: never cached)."""

    index: int
    step: int
    loss: float
    image: np.ndarray  # uint8 (H, W, C), deprocessed as a final picture is


@dataclass(eq=False)
class Job:
    """One picture to render for one request; the engine never looks at `owner`.

    `followers` are other requests waiting for the same picture (same cache
    `key`): the job is computed once and delivered to each of them.
    """

    index: int
    seed: int
    target: Target
    group: object | None = None  # shared by the jobs of one group of one submission
    start: StartImage | None = None  # accentuation: the image it starts from
    preview_every: int = 0  # its owner's: steps between previews; 0: none
    owner: Any = None
    is_cancelled: Callable[[], bool] = lambda: False
    key: str = ""
    followers: list[Any] = field(default_factory=list)

    def wants_preview(self, step: int) -> bool:
        """Whether its owner wants a preview of it after `step` steps.

        After the first step, so one comes at once, then every preview_every-th.
        """
        every = self.preview_every
        return every > 0 and (step == 1 or step % every == 0)


# Returns up to n jobs to start now (fewer, or none, is fine).
JobSource = Callable[[int], list[Job]]
# The jobs that ended in one step, each with its outcome (None: dropped, cancelled),
# and the previews of jobs in flight that step made.
Ended = list[tuple[Job, FilterOutcome | FilterPreview | None]]


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

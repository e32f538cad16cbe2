"""A batch's rows and the interface of an ascent method (pixels or Fourier).

The engine keeps the rows' bookkeeping; a method owns what a row's image is,
how it steps, and how it becomes a picture.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from filtercast_server.engine.tf import tf
from filtercast_server.jobs import Job
from filtercast_server.objectives import Target


@dataclass(eq=False)
class Row:
    """One filter's place in a batch: its job, which attempt, how far it got."""

    job: Job
    attempt: int = 0  # restarts so far (revive)
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0  # of this attempt
    end: int = 0  # the step at which this row's current round ends
    loss: float = float("nan")
    curve: list[float] = field(default_factory=list)  # the objective before each step

    def preview_due(self) -> bool:
        """Whether its requester wants a preview after the step it just made."""
        return self.job.wants_preview(self.steps)

    @property
    def index(self) -> int:
        """The picture it renders: the filter of a plain request, else the picture's number."""
        return self.job.index

    @property
    def target(self) -> Target:
        """What it maximizes."""
        return self.job.target

    @property
    def noise(self) -> tuple[int, ...]:
        """What keys its start noise and views, with its job's seed."""
        return self.job.target.noise

    def age(self) -> float:
        """Seconds since its first attempt started."""
        return time.perf_counter() - self.started


State = tuple[tf.Tensor, ...]  # a batch's tensors, rows first


def filter_losses(activations: tf.Tensor, filters: tf.Tensor, border: int) -> tf.Tensor:
    """Each row's objective: the mean of its own filter's activations, `border` px left out."""
    if border:
        activations = activations[:, border:-border, border:-border, :]
    chosen = tf.gather(activations, filters, axis=3, batch_dims=1)
    return tf.reduce_mean(tf.cast(chosen, tf.float32), axis=[1, 2])


class Method(Protocol):
    """How images are represented, stepped and turned into pictures."""

    def initial(self, rows: Sequence[Row]) -> tuple[np.ndarray, ...]:
        """The start state of `rows`, one array per tensor of State."""

    def step(self, state: State, rows: Sequence[Row]) -> tuple[State, tf.Tensor]:
        """One ascent step for every row; the new state and each row's objective before it."""

    def pictures(self, state: State) -> np.ndarray:
        """Finished rows' uint8 (B, H, W, C) pictures."""

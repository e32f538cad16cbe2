"""The scheduler's vocabulary: what it talks to, its policy, and what it keeps.

The engine it drives (BatchEngine), what it reports (SchedulerObserver) and
where finished jobs go (ResultSink), as protocols; its SchedulerPolicy; a
request inside it (RequestHandle, whose events — Result, then Done, or
Failed — the servicer reads with Scheduler.next_event); one compute key's
continuous batch (Cohort); work that runs only when no request's batch can
(BackgroundWork, in a BackgroundQueue: a dataset's index).
"""

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from filtercast_server.errors import RefusedError
from filtercast_server.jobs import (
    Ended,
    FilterOutcome,
    FilterPreview,
    Job,
    JobSource,
    Plan,
    Precision,
)
from filtercast_server.objectives import Structure
from filtercast_server.params import AscentParams

log = logging.getLogger(__name__)


class QueueFullError(RefusedError):
    """Accepting the request would exceed a queue limit (gRPC RESOURCE_EXHAUSTED)."""


class BatchFailedError(Exception):
    """The engine failed on a batch that held this request's filters."""


@dataclass(frozen=True)
class Done:
    """Every filter of the request has an outcome."""


@dataclass(frozen=True)
class Failed:
    """The request cannot finish; `error` says why."""

    error: BaseException


@dataclass(frozen=True)
class Preview:
    """A picture of the request in flight (droppable: a slow reader gets fewer)."""

    preview: FilterPreview


@dataclass(frozen=True)
class Result:
    """One filter's outcome and how long it waited before computing."""

    outcome: FilterOutcome
    queue_seconds: float


@dataclass(eq=False)
class RequestHandle:
    """A request inside the scheduler; read its events with Scheduler.next_event."""

    request_id: str
    plan: Plan
    loop: asyncio.AbstractEventLoop
    client: str = ""
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: deque[Job] = field(default_factory=deque)
    submitted: float = field(default_factory=time.perf_counter)
    remaining: int = 0
    buffered: int = 0  # results posted and not yet taken by the stream
    previews: int = 0  # previews posted and not yet taken (a few at most: the rest drop)
    paused: bool = False  # its buffer filled up; runs again once half of it is read
    cancelled: bool = False
    finished: bool = False
    following: list[Job] = field(default_factory=list)  # other requests' jobs it waits for

    @functools.cached_property
    def key(self) -> tuple:
        """Plans with equal keys share batches (and one compiled step)."""
        return (self.plan.params, self.plan.precision, self.plan.structure)

    def post(self, event: Any) -> None:
        """Hand an event to the request's event loop (thread-safe)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


def abandoned(job: Job) -> bool:
    """Every request that wanted the job has left (the engine drops it)."""
    return job.owner.cancelled and all(h.cancelled for h in job.followers)


class BatchEngine(Protocol):
    """What the scheduler asks of the engine (engine.ascent.AscentEngine)."""

    def batch_size(self, params: AscentParams) -> int:
        """Rows one batch of `params` holds."""
        ...

    def run_jobs(
        self, params: AscentParams, precision: Precision, structure: Structure, source: JobSource
    ) -> Iterator[Ended]:
        """Run jobs from `source` in one continuous batch, a step per iteration."""
        ...

    def compiled(self, params: AscentParams, precision: Precision, structure: Structure) -> bool:
        """Whether the step this work needs is compiled (else its first batch traces it)."""
        ...


class SchedulerObserver(Protocol):
    """What the scheduler reports (observability.metrics.Metrics)."""

    def on_filters(self, outcome: str, count: int) -> None:
        """`count` jobs ended as `outcome`: ok, dead, cancelled or error (each job once)."""
        ...

    def on_queue_depth(self, queued: int) -> None:
        """Jobs waiting for a batch row now."""
        ...

    def on_shared(self, count: int) -> None:
        """`count` filters of a request follow another request's job."""
        ...


class ResultSink(Protocol):
    """Where finished jobs go, kept by their key (cache.results.ResultCache)."""

    def store(self, key: str, outcome: FilterOutcome) -> None:
        """Keep `outcome` under `key`; never blocks, never raises."""
        ...


class Silent:
    """An observer and sink that does nothing (no metrics, no cache)."""

    def on_filters(self, outcome: str, count: int) -> None:
        """Nothing."""

    def on_queue_depth(self, queued: int) -> None:
        """Nothing."""

    def on_shared(self, count: int) -> None:
        """Nothing."""

    def store(self, key: str, outcome: FilterOutcome) -> None:
        """Nothing."""


@dataclass(frozen=True)
class SchedulerPolicy:
    """How much may wait, and how requests share the device."""

    queue_limit: int = 4096  # filters queued in all
    client_queue_limit: int = 2048  # filters one client may have queued
    stream_buffer: int = 16  # unsent results before a stream's work pauses
    max_cohorts: int = 4  # batches of different keys advanced in turn


class Completions:
    """The times of recent completions, behind the retry hints of a full queue."""

    WINDOW = 256

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=self.WINDOW)

    def record(self) -> None:
        """One job finished now."""
        self._times.append(time.perf_counter())

    def drain_seconds(self, excess: int) -> float:
        """How long until `excess` more filters have left the queue, at the recent rate."""
        if len(self._times) < 2:
            return 5.0
        span = self._times[-1] - self._times[0]
        rate = (len(self._times) - 1) / span if span > 0 else 1.0
        return min(60.0, max(1.0, excess / rate))


@dataclass(eq=False)
class Cohort:
    """One compute key's continuous batch and the device time it has used."""

    key: tuple
    used: float
    slices: Any = None  # the engine's step-by-step iterator
    admitted: int = 0  # jobs taken since the cohort started
    quantum: int = 1  # jobs it may take while other keys wait for a slot
    opened: int = 0  # order of opening, newest highest
    last_step: float = 0.0  # seconds its latest step took
    head_start: float = 0.0  # seconds it may run before its used time counts in its turn

    def turn(self) -> tuple[float, int]:
        """Sort key: least device time first (less any head start left), newest among equals."""
        return (self.used - self.head_start, -self.opened)


class BackgroundWork(Protocol):
    """Device work no client waits on step by step (serving.examples.IndexBuild)."""

    def step(self) -> bool:
        """Run one short batch on the device; False once there is nothing left."""
        ...

    def fail(self, error: BaseException) -> None:
        """It cannot finish (a step raised, or the server stops); it is dropped after this."""
        ...


class BackgroundQueue:
    """Background work, oldest first, one step at a time when the worker has nothing else.

    Bounded: `add` past `limit` pieces is a QueueFullError. Added from the
    event loop, run on the worker thread (a deque's ends are thread-safe).
    """

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._works: deque[BackgroundWork] = deque()

    def __bool__(self) -> bool:
        return bool(self._works)

    def add(self, work: BackgroundWork) -> None:
        """Queue `work` behind the rest (QueueFullError when `limit` are queued)."""
        if len(self._works) >= self.limit:
            raise QueueFullError(
                "background",
                f"{len(self._works)} background jobs (dataset indexes) are queued, the most "
                "this server holds; retry when one has finished",
                30.0,
            )
        self._works.append(work)

    def run_one(self) -> None:
        """One step of the oldest work; a finished or failed one leaves the queue."""
        work = self._works[0]
        try:
            more = work.step()
        except Exception as error:  # one bad build must not stop the worker
            log.exception("background work failed")
            work.fail(error)
            more = False
        if not more:
            self._works.popleft()

    def fail_all(self, error: BaseException) -> None:
        """Drop every piece, telling each why."""
        while self._works:
            self._works.popleft().fail(error)

"""Dynamic batching across requests, with fairness, a bounded queue and cancellation.

One worker thread drives the engine for its device. Every request becomes one
job per filter; jobs of requests with the same compute key (model, layer,
size, steps, precision, ...) share the engine's continuous batches. Freed
batch rows go round-robin to the waiting requests of that key, so a small
request waits at most one filter's lifetime for its first row, and while
requests with other keys wait, a key gives up the device after one batch
worth of new jobs (the batch drains, then the next key runs).

Results travel back to each request's asyncio queue through its event loop.
"""

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from filtercast_server.ascent import AscentEngine, FilterOutcome, Job, Plan

log = logging.getLogger(__name__)


class QueueFullError(Exception):
    """Accepting the request would exceed the queue limit (gRPC RESOURCE_EXHAUSTED)."""


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
class Result:
    """One filter's outcome and how long it waited before computing."""

    outcome: FilterOutcome
    queue_seconds: float


@dataclass(eq=False)
class RequestHandle:
    """A request inside the scheduler; its events arrive on `events`."""

    request_id: str
    plan: Plan
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: deque[Job] = field(default_factory=deque)
    submitted: float = field(default_factory=time.perf_counter)
    remaining: int = 0
    cancelled: bool = False
    finished: bool = False

    @functools.cached_property
    def key(self) -> tuple:
        """Plans with equal keys share batches."""
        return (self.plan.params.compute_key(), self.plan.precision)

    def post(self, event: Any) -> None:
        """Hand an event to the request's event loop (thread-safe)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Scheduler:
    """Owns the queue of jobs and the worker thread that runs them."""

    def __init__(
        self,
        engine: AscentEngine,
        queue_limit: int = 4096,
        on_filters: Callable[[str, int], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.queue_limit = queue_limit
        # Every job ends here exactly once, as ok, dead, cancelled or error.
        self._on_filters = on_filters or (lambda outcome, count: None)
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._requests: deque[RequestHandle] = deque()  # round-robin order
        self._queued = 0
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="filtercast-engine", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand; queued jobs are not started."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch row."""
        return self._queued

    def submit(self, request_id: str, plan: Plan, loop: asyncio.AbstractEventLoop) -> RequestHandle:
        """Queue every filter of `plan`, or raise QueueFullError at once."""
        handle = RequestHandle(request_id, plan, loop)
        handle.pending.extend(
            Job(index, plan.seed, owner=handle, is_cancelled=lambda: handle.cancelled)
            for index in plan.filters
        )
        handle.remaining = len(plan.filters)
        with self._lock:
            if self._queued + len(plan.filters) > self.queue_limit:
                raise QueueFullError(
                    f"server queue is full: {self._queued} filters queued, this request adds "
                    f"{len(plan.filters)}, limit {self.queue_limit}; retry later or ask for "
                    "fewer filters"
                )
            self._requests.append(handle)
            self._queued += len(plan.filters)
            self._on_queue_depth(self._queued)
            self._wakeup.notify()
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        """Drop the request's queued jobs; its rows in a batch leave at the next step."""
        with self._lock:
            if handle.finished or handle.cancelled:
                return
            handle.cancelled = True
            dropped = len(handle.pending)
            handle.pending.clear()
            self._queued -= dropped
            self._on_queue_depth(self._queued)
            self._forget(handle)
        if dropped:
            self._on_filters("cancelled", dropped)

    def _forget(self, handle: RequestHandle) -> None:
        if handle in self._requests:
            self._requests.remove(handle)

    def _next_key(self) -> Any:
        while not self._stopping:
            for handle in self._requests:
                if handle.pending:
                    return handle.key
            self._wakeup.wait()
        return None

    def _take(self, key: Any, n: int, budget: list[int], touched: set[RequestHandle]) -> list[Job]:
        """Up to n jobs of requests with `key`, one per request in turn."""
        jobs: list[Job] = []
        with self._lock:
            others_waiting = any(h.pending and h.key != key for h in self._requests)
            if self._stopping or (others_waiting and budget[0] <= 0):
                return jobs
            matching = [h for h in self._requests if h.pending and h.key == key]
            served: list[RequestHandle] = []
            while len(jobs) < n and any(h.pending for h in matching):
                for handle in matching:
                    if handle.pending and len(jobs) < n:
                        jobs.append(handle.pending.popleft())
                        served.append(handle)
                        touched.add(handle)
            # Requests just served go to the back: the next refill starts elsewhere.
            for handle in dict.fromkeys(served):
                self._requests.remove(handle)
                self._requests.append(handle)
            self._queued -= len(jobs)
            budget[0] -= len(jobs)
            self._on_queue_depth(self._queued)
        return jobs

    def _work(self) -> None:
        while True:
            with self._lock:
                key = self._next_key()
                if key is None:
                    return
            params, precision = key
            budget = [self.engine.batch_size(params)]
            touched: set[RequestHandle] = set()
            try:
                source = functools.partial(self._take, key, budget=budget, touched=touched)
                for job, outcome in self.engine.run_jobs(params, precision, source):
                    self._deliver(job, outcome)
            except Exception as error:  # one bad batch must not stop the server
                log.exception("engine failed on a batch", extra={"model": params.model})
                self._fail(touched, error)

    def _deliver(self, job: Job, outcome: FilterOutcome | None) -> None:
        handle: RequestHandle = job.owner
        if outcome is None or handle.cancelled:
            self._on_filters("cancelled", 1)
            return
        self._on_filters("dead" if outcome.dead else "ok", 1)
        queue_seconds = max(0.0, time.perf_counter() - handle.submitted - outcome.seconds)
        handle.post(Result(outcome, queue_seconds))
        with self._lock:
            handle.remaining -= 1
            if handle.remaining == 0:
                handle.finished = True
                self._forget(handle)
        if handle.finished:
            handle.post(Done())

    def _fail(self, handles: set[RequestHandle], error: BaseException) -> None:
        for handle in handles:
            with self._lock:
                if handle.finished:
                    continue
                handle.finished = True
                self._queued -= len(handle.pending)
                handle.pending.clear()
                lost = handle.remaining
                self._forget(handle)
                self._on_queue_depth(self._queued)
            self._on_filters("error", lost)
            handle.post(Failed(BatchFailedError(f"{type(error).__name__}: {error}")))

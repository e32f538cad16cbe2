"""Dynamic batching across requests: fair, bounded, backpressured and cancellable.

One worker thread drives the engine for its device. Every request becomes one
job per filter. Jobs of requests with the same compute key (model, layer,
size, steps, precision, ...) share one continuous batch, a *cohort*; freed
rows go round-robin to the waiting requests of that key.

Up to `max_cohorts` cohorts of different keys are active at once, advanced one
compiled step at a time, the one that has used the least device time first. A
newcomer starts level with the least served, with a head start of one step of
the slowest active cohort: a small request behind a big one waits for the big
cohort's step in hand, not for the whole request. When more keys wait than
there are slots, a cohort stops taking jobs after one batch worth and drains.

Bounds: a global and a per-client limit on queued filters (refused at once
with a retry estimate); a stream whose client does not read stops getting
rows once `stream_buffer` results wait. Previews (pictures in flight) never
count there: past PREVIEWS_PER_FILTER unread per filter, a request's previews drop.

De-duplication: a request whose filter is queued or running for another
request (same cache key) follows that job: computed once, delivered to both;
the first follower still there inherits a job its owner leaves, and a
finished job goes to the ResultSink (the cache) even when everyone has left.

Background work (a dataset's index) runs one short step at a time when no
request's batch can. Results reach each request's asyncio queue through its
event loop.
"""

import asyncio
import functools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping

from filtercast_server.jobs import Ended, FilterOutcome, FilterPreview, Job, Plan
from filtercast_server.serving.batching import (
    BackgroundQueue,
    BackgroundWork,
    BatchEngine,
    BatchFailedError,
    Cohort,
    Completions,
    Done,
    Failed,
    Preview,
    QueueFullError,
    RequestHandle,
    Result,
    ResultSink,
    SchedulerObserver,
    SchedulerPolicy,
    Silent,
    abandoned,
)

log = logging.getLogger(__name__)

# Unread previews a request may hold: 2 per filter it waits for (a whole step's), 32 at most.
PREVIEWS_PER_FILTER, PREVIEW_BACKLOG = 2, 32


def _next_unit(pending: deque[Job]) -> int:
    """How many jobs at the head of `pending` must enter a batch together (0: none queued)."""
    if not pending:
        return 0
    group = pending[0].group
    if group is None:
        return 1
    return next((i for i, job in enumerate(pending) if job.group is not group), len(pending))


class Scheduler:
    """Owns the queue of jobs and the worker thread that runs them."""

    def __init__(
        self,
        engine: BatchEngine,
        policy: SchedulerPolicy | None = None,
        *,
        observer: SchedulerObserver | None = None,
        results: ResultSink | None = None,
    ) -> None:
        self.engine = engine
        policy = policy or SchedulerPolicy()
        self.queue_limit = policy.queue_limit
        self.client_queue_limit = policy.client_queue_limit
        self.stream_buffer = policy.stream_buffer
        self.max_cohorts = policy.max_cohorts
        # Every job ends in the observer exactly once, as ok, dead, cancelled or error.
        self._observer: SchedulerObserver = observer or Silent()
        self._results: ResultSink = results or Silent()
        self._in_flight: dict[str, Job] = {}  # cache key -> the job computing it
        self._requests: deque[RequestHandle] = deque()  # round-robin order
        self._queued = 0
        self._queued_by_client: Counter[str] = Counter()
        self._active: dict[tuple, Cohort] = {}
        self._opened = 0
        self._completions = Completions()
        self._background = BackgroundQueue()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="filtercast-engine", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the step in hand; queued jobs are not started, background work fails."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._background.fail_all(RuntimeError("the server is stopping"))

    def submit_background(self, work: BackgroundWork) -> None:
        """Run `work` step by step whenever no request's batch can run (QueueFullError)."""
        with self._lock:
            self._background.add(work)
            self._wakeup.notify()

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch row."""
        return self._queued

    def submit(
        self,
        request_id: str,
        plan: Plan,
        loop: asyncio.AbstractEventLoop,
        client: str = "",
        keys: Mapping[int, str] | None = None,
    ) -> RequestHandle:
        """Queue every filter of `plan`, or raise QueueFullError at once.

        With `keys` (filter -> cache key), a filter already in flight for
        another request is shared, not queued again.
        """
        handle = RequestHandle(request_id, plan, loop, client)
        keys = keys or {}
        with self._lock:
            shared: list[Job] = []
            fresh: list[Job] = []
            # A group is shared whole or not at all: its members are coupled.
            for unit in (plan.jobs(u, owner=handle) for u in plan.units(plan.filters)):
                found = [self._in_flight.get(keys.get(job.index, "")) for job in unit]
                if all(j is not None and not abandoned(j) for j in found):
                    shared.extend(j for j in found if j is not None)
                else:
                    fresh.extend(unit)
            count = len(fresh)
            if self._queued + count > self.queue_limit:
                raise QueueFullError(
                    "queue",
                    f"server queue is full: {self._queued} filters queued, this request adds "
                    f"{count}, limit {self.queue_limit}; retry later or ask for fewer filters",
                    self._completions.drain_seconds(self._queued + count - self.queue_limit),
                )
            mine = self._queued_by_client[client]
            if mine + count > self.client_queue_limit:
                raise QueueFullError(
                    "client_queue",
                    f"this client has {mine} filters queued, this request adds {count}, "
                    f"limit {self.client_queue_limit} per client; retry when earlier "
                    "requests have started, or ask for fewer filters",
                    self._completions.drain_seconds(mine + count - self.client_queue_limit),
                )
            for job in shared:
                job.followers.append(handle)
                handle.following.append(job)
            for job in fresh:
                job.key = keys.get(job.index, "")
                job.is_cancelled = functools.partial(abandoned, job)
                handle.pending.append(job)
                if job.key:
                    self._in_flight[job.key] = job
            handle.remaining = len(plan.filters)
            self._requests.append(handle)
            self._dequeued(handle, -count)
            self._wakeup.notify()
        if shared:
            self._observer.on_shared(len(shared))
        return handle

    async def next_event(self, handle: RequestHandle) -> Result | Preview | Done | Failed:
        """The request's next event; taking a result frees room in its buffer."""
        event = await handle.events.get()
        if isinstance(event, Preview):
            with self._lock:
                handle.previews -= 1
        elif isinstance(event, Result):
            with self._lock:
                handle.buffered -= 1
                if handle.paused and handle.buffered <= self.stream_buffer // 2:
                    handle.paused = False
                    self._wakeup.notify()  # its jobs may run again
        return event

    def cancel(self, handle: RequestHandle) -> None:
        """Drop the request's queued jobs; its rows in a batch leave at the next step.

        A queued job that another request follows passes to that request.
        """
        with self._lock:
            if handle.finished or handle.cancelled:
                return
            handle.cancelled = True
            for job in handle.following:  # it waits no more: not a follower to deliver to
                if handle in job.followers:
                    job.followers.remove(handle)
            handle.following.clear()
            dropped = 0
            for job in handle.pending:
                if not self._pass_on(job, handle, lambda h: not h.cancelled):
                    dropped += 1
                    self._release(job)
            self._dequeued(handle, len(handle.pending))
            handle.pending.clear()
            self._forget(handle)
        if dropped:
            self._observer.on_filters("cancelled", dropped)

    # --- under the lock -------------------------------------------------------------

    def _dequeued(self, handle: RequestHandle, count: int) -> None:
        """Account for `count` jobs of `handle` leaving the queue (negative: joining)."""
        self._queued -= count
        self._queued_by_client[handle.client] -= count
        if self._queued_by_client[handle.client] <= 0:
            del self._queued_by_client[handle.client]
        self._observer.on_queue_depth(self._queued)

    def _pass_on(
        self, job: Job, owner: RequestHandle, fit: Callable[[RequestHandle], bool]
    ) -> bool:
        """Give a queued job of `owner` to its first follower that is `fit`; False if none.

        The heir queues it as its own; the caller takes it out of `owner`'s queue.
        """
        heir = next((h for h in job.followers if fit(h)), None)
        if heir is None:
            return False
        job.followers.remove(heir)
        heir.following.remove(job)
        job.owner = heir
        heir.pending.appendleft(job)
        self._dequeued(heir, -1)
        return True

    def _release(self, job: Job) -> None:
        """The job no longer computes its key: later requests start their own."""
        if job.key and self._in_flight.get(job.key) is job:
            del self._in_flight[job.key]

    def _forget(self, handle: RequestHandle) -> None:
        if handle in self._requests:
            self._requests.remove(handle)

    def _runnable(self, handle: RequestHandle) -> bool:
        """Has queued jobs and is not paused for a full stream buffer."""
        return bool(handle.pending) and not handle.paused

    def _open_cohorts(self) -> None:
        """Give waiting keys a free slot each, in round-robin order of their requests."""
        for handle in self._requests:
            if len(self._active) >= self.max_cohorts:
                return
            if handle.key not in self._active and self._runnable(handle):
                params, precision, structure = handle.key
                # A newcomer starts level with the least served, with a head start of one
                # step of the slowest active batch: a small request runs its few steps
                # before a big one's next step, rather than one step per big step. The
                # head start is not device time used, so it never lowers the level.
                active = self._active.values()
                self._opened += 1
                cohort = Cohort(
                    handle.key,
                    used=min((c.used for c in active), default=0.0),
                    head_start=max((c.last_step for c in active), default=0.0),
                    quantum=self.engine.batch_size(params),
                    opened=self._opened,
                )
                log.debug("opened a batch for %s (%d active)", params, len(self._active) + 1)
                cohort.slices = self.engine.run_jobs(
                    params, precision, structure, functools.partial(self._take, cohort)
                )
                self._active[handle.key] = cohort

    def _take(self, cohort: Cohort, n: int) -> list[Job]:
        """Up to n jobs for `cohort`, one per runnable request of its key in turn."""
        jobs: list[Job] = []
        with self._lock:
            if self._stopping:
                return jobs
            full = len(self._active) >= self.max_cohorts
            if full and cohort.admitted >= cohort.quantum and self._keys_waiting():
                return jobs  # drain and hand the slot on
            matching = [h for h in self._requests if h.key == cohort.key and self._runnable(h)]
            served: list[RequestHandle] = []
            taking = True
            while taking:  # a group enters whole, when its rows are free
                taking = False
                for handle in matching:
                    unit = _next_unit(handle.pending)
                    if unit and len(jobs) + unit <= n:
                        jobs.extend(handle.pending.popleft() for _ in range(unit))
                        served.extend([handle] * unit)
                        taking = True
            # Requests just served go to the back: the next refill starts elsewhere.
            for handle in dict.fromkeys(served):
                self._requests.remove(handle)
                self._requests.append(handle)
                self._dequeued(handle, served.count(handle))
            cohort.admitted += len(jobs)
        return jobs

    def _keys_waiting(self) -> bool:
        return any(h.key not in self._active and self._runnable(h) for h in self._requests)

    # --- the worker thread ------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping:
                    self._open_cohorts()
                    if self._active or self._background:
                        break
                    self._wakeup.wait()
                if self._stopping:
                    return
                active = self._active.values()
                cohort = min(active, key=Cohort.turn) if active else None
            if cohort is None:
                self._background.run_one()  # nothing else can run: one short step
                continue
            started = time.perf_counter()
            ended: Ended = []
            try:
                ended = next(cohort.slices)
            except StopIteration:
                self._close(cohort)
            except Exception as error:  # one bad batch must not stop the server
                log.exception("engine failed on a batch", extra={"model": cohort.key[0].model})
                self._close(cohort)
                self._fail(cohort.key, error)
            cohort.last_step = time.perf_counter() - started
            cohort.used += cohort.last_step
            cohort.head_start = max(0.0, cohort.head_start - cohort.last_step)
            for job, outcome in ended:
                self._deliver(job, outcome)

    def _close(self, cohort: Cohort) -> None:
        with self._lock:
            del self._active[cohort.key]
        log.debug("closed the batch for %s", cohort.key[0])

    def _deliver(self, job: Job, outcome: FilterOutcome | FilterPreview | None) -> None:
        if isinstance(outcome, FilterPreview):
            self._offer_preview(job, outcome)
            return
        if outcome is not None and job.key:
            # Stored (in memory at once) before the job stops being in flight: a request
            # arriving in between finds one or the other.
            self._results.store(job.key, outcome)
        with self._lock:
            self._release(job)
            # abandoned() never turns back: a dropped job (None) has no one left to wait.
            owners = [h for h in (job.owner, *job.followers) if not h.cancelled]
            if outcome is not None:
                self._completions.record()
        if outcome is None or not owners:
            self._observer.on_filters("cancelled", 1)
            return
        self._observer.on_filters("dead" if outcome.dead else "ok", 1)
        for handle in owners:
            self._post_result(handle, outcome)

    def _offer_preview(self, job: Job, preview: FilterPreview) -> None:
        """To each requester still reading, unless its share of unread previews is full."""
        with self._lock:
            takers = [
                h
                for h in (job.owner, *job.followers)
                if not (h.cancelled or h.finished)
                and h.previews < min(PREVIEW_BACKLOG, PREVIEWS_PER_FILTER * h.remaining)
            ]
            for handle in takers:
                handle.previews += 1
        for handle in takers:
            handle.post(Preview(preview))

    def _post_result(self, handle: RequestHandle, outcome: FilterOutcome) -> None:
        queue_seconds = max(0.0, time.perf_counter() - handle.submitted - outcome.seconds)
        with self._lock:
            if handle.cancelled or handle.finished:
                return
            handle.buffered += 1
            # Hysteresis: a paused stream resumes at half its buffer, not one result
            # later, so a slow reader does not reopen a batch for every picture it takes.
            if not handle.paused and handle.buffered >= self.stream_buffer:
                handle.paused = True
                self._hand_over_paused(handle)
            handle.remaining -= 1
            if handle.remaining == 0:
                handle.finished = True
                self._forget(handle)
        handle.post(Result(outcome, queue_seconds))
        if handle.finished:
            handle.post(Done())

    def _hand_over_paused(self, handle: RequestHandle) -> None:
        """A slow reader does not hold up the requests that share its queued jobs.

        Each queued job another request follows passes to a follower still
        reading; the paused request follows it instead.
        """
        kept: deque[Job] = deque()
        for job in handle.pending:
            if self._pass_on(job, handle, lambda h: not h.cancelled and not h.paused):
                job.followers.append(handle)
                handle.following.append(job)
                self._dequeued(handle, 1)
            else:
                kept.append(job)
        handle.pending = kept

    def _fail(self, key: tuple, error: BaseException) -> None:
        """Fail every unfinished request of `key`: in the failed batch or waiting for it."""
        with self._lock:
            handles = [h for h in self._requests if h.key == key]
            for job in [j for j in self._in_flight.values() if j.owner.key == key]:
                self._release(job)
        for handle in handles:
            with self._lock:
                if handle.finished or handle.cancelled:
                    continue
                handle.finished = True
                self._dequeued(handle, len(handle.pending))
                handle.pending.clear()
                lost = handle.remaining
                self._forget(handle)
            self._observer.on_filters("error", lost)
            handle.post(Failed(BatchFailedError(f"{type(error).__name__}: {error}")))

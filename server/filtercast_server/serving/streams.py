"""One VisualizeFilters stream, once planned: Accepted, each filter as it comes, Grid, Summary.

The cached filters go first, fetched a few at a time as they are sent; then
each computed one as the scheduler delivers it. A stream is bounded three
ways: its unsent results (the scheduler pauses its work when they pile up),
how long one message may wait for the client to read (`stall_seconds`), and
its whole lifetime (`max_stream_seconds`).
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from filtercast.grid import GridCollector
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.cache.entry import Expectation
from filtercast_server.cache.results import ResultCache
from filtercast_server.jobs import FilterOutcome, FilterPreview, Plan
from filtercast_server.observability.logs import ThrottledLog
from filtercast_server.serving.admission import Slot
from filtercast_server.serving.batching import Done, Failed, Preview, RequestHandle, Result
from filtercast_server.serving.scheduler import Scheduler
from filtercast_server.serving.status import ErrorFacts, refuse
from filtercast_server.serving.wire import (
    encode_image,
    filter_message,
    grid_message,
    picture_of,
    preview_message,
    summary_message,
)

if TYPE_CHECKING:
    from filtercast_server.observability.metrics import Metrics

log = logging.getLogger(__name__)
FETCH_BATCH = 16  # cached pictures read at once: a stream holds this many, not all
# Calls a cache method on the lookup threads within its deadline, else the fallback.
AskCache = Callable[..., Awaitable[Any]]


class CallEndedError(asyncio.CancelledError):
    """A write failed because the call ended underneath it.

    The client left, or its deadline passed: to the handler and the metrics the
    call was cancelled (CANCELLED or DEADLINE_EXCEEDED, never UNKNOWN).
    """


class StalledError(Exception):
    """The client read nothing for longer than the stall limit; `write` is still pending."""

    def __init__(self, write: asyncio.Future) -> None:
        super().__init__("stalled")
        self.write = write


class EngineFailedError(Exception):
    """The engine failed on a batch of the request (the message says how)."""


@dataclass
class Work:
    """A request's filters: those the cache holds, and the scheduler's handles for the rest."""

    request_id: str
    plan: Plan  # every filter asked for
    client: str
    cached: list[int] = dataclasses.field(default_factory=list)  # in request order
    keys: dict[int, str] = dataclasses.field(default_factory=dict)  # cache key per filter
    expect: Expectation = dataclasses.field(default_factory=Expectation)  # its entries' checks
    # The computed filters; a second handle for cached ones gone before they were fetched.
    handles: list[RequestHandle] = dataclasses.field(default_factory=list)


@dataclass
class Tally:
    """A stream's running counts."""

    started: float
    total: int = 0
    done: int = 0
    kept: int = 0
    revived: int = 0  # filters alive after a restart
    cached: int = 0  # filters served from the result cache
    filter_seconds: float = 0.0

    def add(self, outcome: FilterOutcome) -> None:
        """Count one finished filter."""
        self.done += 1
        self.kept += not outcome.dead
        self.revived += bool(outcome.revived) and not outcome.dead
        self.cached += outcome.cached
        self.filter_seconds += outcome.seconds


@dataclass(frozen=True)
class StreamTools:
    """What every stream of a servicer shares."""

    scheduler: Scheduler
    cache: ResultCache | None
    metrics: "Metrics"
    encoder: Executor  # PNG encoding and grid stitching, off the event loop
    ask_cache: AskCache
    stall_seconds: float
    max_stream_seconds: float
    warn: ThrottledLog


class Stream:
    """Sends one planned request's events to its client (see the module docstring)."""

    def __init__(
        self,
        tools: StreamTools,
        work: Work,
        context: Any,
        labels: tuple[str, str, str],
        grid: bool,
        fmt: pb.ImageFormat,
    ) -> None:
        self.tools = tools
        self.work = work
        self.context = context
        self.labels = labels  # model, layer, preset
        self.fmt = fmt
        self.tally = Tally(time.perf_counter(), len(work.plan.filters))
        self.grid = GridCollector(work.plan.grid, self.tally.total) if grid else None
        self.logger = logging.LoggerAdapter(
            log, {"request_id": work.request_id, "client": work.client}
        )

    async def run(self, accepted: pb.VisualizeFiltersResponse, slot: Slot) -> None:
        """Every event of the stream, within its lifetime; a stalled client loses its work."""
        metrics, outcome = self.tools.metrics, "cancelled"
        metrics.in_flight.inc()
        try:
            async with asyncio.timeout(self.tools.max_stream_seconds):
                await self.send(accepted)
                try:
                    await self._results()
                except EngineFailedError as failure:
                    outcome = "error"
                    self.logger.error("request failed: %s", failure)
                    await self.context.abort(
                        grpc.StatusCode.INTERNAL,
                        f"the engine failed on a batch of this request: {failure}",
                    )
                await self._grid_and_summary()
                outcome = "ok"
                self.logger.info(
                    "finished: %d kept, %d dead, %.2fs",
                    self.tally.kept,
                    self.tally.done - self.tally.kept,
                    time.perf_counter() - self.tally.started,
                )
        except StalledError as stall:
            outcome = "stalled"
            await self._stalled(stall, slot)
        except TimeoutError:
            outcome = "expired"
            await self._expired(slot)
        finally:
            if outcome != "ok":
                self.cancel()
            if outcome == "cancelled":
                self.logger.info(
                    "cancelled after %d of %d filters", self.tally.done, self.tally.total
                )
            metrics.in_flight.dec()
            metrics.request_duration.labels(*self.labels, outcome).observe(
                time.perf_counter() - self.tally.started
            )

    def cancel(self) -> None:
        """Stop the request's work in the scheduler."""
        for handle in self.work.handles:
            self.tools.scheduler.cancel(handle)

    async def send(self, message: pb.VisualizeFiltersResponse) -> None:
        """Write one message, or StalledError (holding the pending write) after the stall limit."""
        write = asyncio.ensure_future(self.context.write(message))
        try:
            await asyncio.wait_for(asyncio.shield(write), self.tools.stall_seconds)
        except TimeoutError:
            raise StalledError(write) from None
        except asyncio.CancelledError:
            write.cancel()
            # It may have failed already (the client's connection went first): nobody
            # else will look at that, and asyncio would log it as never retrieved.
            write.add_done_callback(_retrieve)
            raise
        except Exception as error:  # the call ended under the write: the client left
            raise CallEndedError from error

    # --- the filters ----------------------------------------------------------------------

    async def _results(self) -> None:
        """One FilterResult per filter: the cached ones first, then each as it finishes.

        Cached pictures are fetched a few at a time as they are sent; one gone
        since the lookup (evicted, corrupt) is computed after all.
        """
        work, cache = self.work, self.tools.cache
        late: list[int] = []
        for chunk in _chunks(work.plan.units(work.cached), FETCH_BATCH):
            found: dict[int, FilterOutcome] = {}
            if cache is not None and cache.available():  # resting: not even queued
                wanted = {index: work.keys[index] for unit in chunk for index in unit}
                found = await self.tools.ask_cache(cache.fetch, {}, wanted, work.expect)
            for unit in chunk:  # a group whose member is gone is computed whole
                if all(index in found for index in unit):
                    for index in unit:
                        await self._result(found[index])
                else:
                    late.extend(unit)
        self.queue(late)
        for handle in work.handles:
            while not isinstance(event := await self.tools.scheduler.next_event(handle), Done):
                if isinstance(event, Failed):
                    raise EngineFailedError(event.error)
                if isinstance(event, Preview):
                    await self._preview(event.preview)
                    continue
                assert isinstance(event, Result)
                self.tools.metrics.filter_queue_wait.observe(event.queue_seconds)
                self.tools.metrics.filter_compute.observe(event.outcome.seconds)
                await self._result(event.outcome)

    def queue(self, filters: list[int]) -> None:
        """Hand `filters` of the request to the scheduler (nothing when empty; QueueFullError)."""
        if filters:
            work = self.work
            plan = dataclasses.replace(work.plan, filters=tuple(filters))
            loop = asyncio.get_running_loop()
            handle = self.tools.scheduler.submit(
                work.request_id, plan, loop, work.client, work.keys
            )
            work.handles.append(handle)

    async def _preview(self, preview: FilterPreview) -> None:
        loop = asyncio.get_running_loop()
        plan = self.work.plan
        message = await loop.run_in_executor(self.tools.encoder, preview_message, preview, plan)
        await self.send(message)

    async def _result(self, outcome: FilterOutcome) -> None:
        tally = self.tally
        tally.add(outcome)
        if tally.done == 1:
            self.tools.metrics.time_to_first_filter.labels(*self.labels).observe(
                time.perf_counter() - tally.started
            )
        key = self.work.keys.get(outcome.index, "")
        message = filter_message(outcome, tally.done, tally.total, key, self.work.plan)
        if outcome.image is not None:
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(self.tools.encoder, picture_of, outcome, self.fmt)
            message.filter.image.CopyFrom(image)
        await self.send(message)
        if self.grid is not None:
            self.grid.add(outcome)

    async def _grid_and_summary(self) -> None:
        """The stitched grid (when asked for and any filter lived), then the Summary."""
        loop, tally = asyncio.get_running_loop(), self.tally
        if self.grid is not None:
            started = time.perf_counter()
            stitched = await loop.run_in_executor(self.tools.encoder, self.grid.build)
            self.tools.metrics.stitch_duration.observe(time.perf_counter() - started)
            if stitched is not None:
                encoder = self.tools.encoder
                image = await loop.run_in_executor(encoder, encode_image, stitched.image, self.fmt)
                await self.send(grid_message(image, stitched.n, stitched.margin, stitched.order))
        seconds = time.perf_counter() - tally.started
        dead = tally.done - tally.kept
        await self.send(
            summary_message(
                tally.kept, dead, seconds, tally.filter_seconds, tally.revived, tally.cached
            )
        )

    # --- how a stream ends early ----------------------------------------------------------

    async def _stalled(self, stall: StalledError, slot: Slot) -> None:
        """The work and the stream slot go back now; the status once the client reads.

        gRPC cannot drop the unread message, and the final status cannot
        overtake it; if the client never reads, its cancel, deadline or
        disconnect ends the call. Meanwhile it holds only that one message.
        """
        self.cancel()
        slot.release()
        client, seconds = self.work.client, self.tools.stall_seconds
        self.tools.metrics.rejected.labels("stalled").inc()
        self.tools.warn.warning(
            (client, "stalled"),
            "ended a stream of %s: its client read nothing for %.0f s",
            client,
            seconds,
        )
        try:
            await stall.write
        except Exception as error:  # the client left without reading
            raise CallEndedError from error
        await self.context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the client read nothing for {seconds:.0f} s; the stream was ended",
        )

    async def _expired(self, slot: Slot) -> None:
        self.cancel()
        slot.release()
        self.tools.metrics.rejected.labels("lifetime").inc()
        await refuse(
            self.context,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the stream ran for {self.tools.max_stream_seconds:.0f} s, this server's limit; ask "
            "for fewer filters or split the request",
            ErrorFacts(),
        )


def _chunks(all_units: list[list[int]], size: int) -> list[list[list[int]]]:
    """Units in chunks of about `size` pictures; a unit is never split."""
    chunks: list[list[list[int]]] = [[]]
    for unit in all_units:
        if chunks[-1] and sum(map(len, chunks[-1])) + len(unit) > size:
            chunks.append([])
        chunks[-1].append(unit)
    return [chunk for chunk in chunks if chunk]


def _retrieve(future: asyncio.Future) -> None:
    """Mark a finished future's outcome as seen (it needs no one to act on it)."""
    if not future.cancelled():
        future.exception()

"""The gRPC servicer: decode, admit, plan, submit to the scheduler, stream events back.

It never touches TensorFlow: plans come from planning, pictures from the
scheduler, encoding from wire. Its methods take the request's raw bytes, so an
undecodable request is INVALID_ARGUMENT like any other bad request (grpc.aio
would answer UNKNOWN itself). Every bad request is answered with
INVALID_ARGUMENT (NOT_FOUND for an unknown model) before any work starts; a
request over a limit with RESOURCE_EXHAUSTED and a RetryInfo hint.

A stream is bounded three ways: its unsent results (the scheduler pauses its
work when they pile up), how long one message may wait for the client to read
(`stall_seconds`), and its whole lifetime (`max_stream_seconds`).
"""

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from filtercast.contract import PRECISIONS, PRESETS, SERVICE
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.admission import Slot, StreamAdmission
from filtercast_server.cache.entry import Expectation
from filtercast_server.cache.keys import filter_keys
from filtercast_server.cache.results import ResultCache
from filtercast_server.errors import (
    InvalidRequestError,
    RefusedError,
    UnknownModelError,
    quoted,
)
from filtercast_server.grid import GridCollector
from filtercast_server.interceptor import current_caller
from filtercast_server.planning import OverBudgetError, make_plan, resolve_precision
from filtercast_server.presets import Limits
from filtercast_server.scheduler import Done, Failed, RequestHandle, Result, Scheduler
from filtercast_server.status import ErrorFacts, status_trailers
from filtercast_server.throttle import ThrottledLog
from filtercast_server.wire import (
    check_grid_fits,
    encode_image,
    field_path,
    filters_of,
    image_format,
    overrides_of,
    picture_of,
    precision_name,
    preset_infos,
    preset_name,
    resolved_params,
)
from filtercast_server.work import FilterOutcome, Plan

if TYPE_CHECKING:  # both import TensorFlow; the servicer only reads them
    from filtercast_server.metrics import Metrics
    from filtercast_server.models import LoadedModel

__all__ = ["SERVICE", "CallEndedError", "FilterVisualizerServicer", "StalledError"]
log = logging.getLogger(__name__)
T = TypeVar("T")
LOOKUP_SECONDS = 2.0  # a lookup running longer is skipped (reads rest): the filters compute
LOOKUP_THREADS = 4  # lookups at once; more wait their turn, which is not counted against them
FETCH_BATCH = 16  # cached pictures read at once: a stream holds this many, not all
NO_FACTS = ErrorFacts()


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


class FilterVisualizerServicer:
    """filtercast.v1.FilterVisualizerService on a scheduler and loaded models."""

    def __init__(
        self,
        models: "dict[str, LoadedModel]",
        scheduler: Scheduler,
        metrics: "Metrics",
        limits: Limits,
        admission: StreamAdmission,
        *,
        server_limits: pb.ServerLimits,
        max_message_bytes: int,
        default_precision: str = "auto",
        stall_seconds: float = 60.0,
        max_stream_seconds: float = 3600.0,
        cache: ResultCache | None = None,
    ) -> None:
        self.models = models
        self.cache = cache
        self.scheduler = scheduler
        self.metrics = metrics
        self.limits = limits
        self.server_limits = server_limits
        self.admission = admission
        self.max_message_bytes = max_message_bytes
        self.default_precision = default_precision
        self.stall_seconds = stall_seconds
        self.max_stream_seconds = max_stream_seconds
        self.ready = False
        self.draining = False
        self._warn = ThrottledLog(log)
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="filtercast-encode")
        # Planning may build a layer's extractor (Keras): off the event loop, one at a time.
        self._planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filtercast-plan")
        # Cache lookups block on a disk or a network: off the event loop too.
        self._lookups = ThreadPoolExecutor(
            max_workers=LOOKUP_THREADS, thread_name_prefix="filtercast-cache"
        )

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The service's methods, taking raw request bytes (decoded by the servicer)."""

        def unary(method: Any, response: type[Message]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, response_serializer=response.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ListModels": unary(self.ListModels, pb.ListModelsResponse),
                "DescribeModel": unary(self.DescribeModel, pb.DescribeModelResponse),
                "VisualizeFilters": grpc.unary_stream_rpc_method_handler(
                    self.VisualizeFilters,
                    response_serializer=pb.VisualizeFiltersResponse.SerializeToString,
                ),
            },
        )

    # --- shared ---------------------------------------------------------------------

    async def _decode(self, data: bytes, kind: type[Message], context: Any) -> Any:
        try:
            return kind.FromString(data)
        except DecodeError as error:
            caller = current_caller()
            self._warn.warning(
                (caller, "malformed"), "undecodable %s from %s: %s", kind.__name__, caller, error
            )
            await self._refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "malformed",
                f"could not decode the request as {kind.DESCRIPTOR.full_name}: {error}",
            )

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        code: grpc.StatusCode,
        reason: str,
        message: str,
        facts: ErrorFacts = NO_FACTS,
    ) -> NoReturn:
        """Count the refusal by reason and end the call with `code` and its details."""
        self.metrics.rejected.labels(reason).inc()
        if facts.retry_after is not None:
            message = f"{message} [retry in ~{facts.retry_after:.0f} s]"
        await context.abort(code, message, status_trailers(code, message, facts))

    def _model_info(self, model: "LoadedModel") -> pb.ModelInfo:
        auto = resolve_precision(model, "auto", self.default_precision).value
        config = model.config
        return pb.ModelInfo(
            name=model.name,
            weights_source=model.weights_source,
            weights_sha256=model.weights_sha256,
            device=model.device.description,
            auto_precision=PRECISIONS[auto],
            default_layer=model.default_layer,
            layers=[
                pb.LayerInfo(
                    name=i.name,
                    type=i.type,
                    channels=i.channels,
                    output_stride=i.stride,
                    dtype=i.dtype,
                )
                for i in model.layers
            ],
            input_size=model.input_size or 0,
            input_channels=model.channels,
            preprocessing=model.preprocessing.describe(),
            default_preset=PRESETS[model.default_preset],
            display_name=config.display_name,
            description=config.description,
            kind="builtin" if config.builtin else "file",
        )

    # --- methods --------------------------------------------------------------------

    async def ListModels(self, data: bytes, context: Any) -> pb.ListModelsResponse:  # noqa: N802
        """Every loaded model, every preset with its defaults, and this server's limits."""
        await self._decode(data, pb.ListModelsRequest, context)
        return pb.ListModelsResponse(
            models=[self._model_info(m) for m in self.models.values()],
            presets=preset_infos(),
            limits=self.server_limits,
        )

    async def DescribeModel(self, data: bytes, context: Any) -> pb.DescribeModelResponse:  # noqa: N802
        """One loaded model, or NOT_FOUND listing the served ones."""
        request = await self._decode(data, pb.DescribeModelRequest, context)
        if request.model not in self.models:
            await self._refuse(
                context,
                grpc.StatusCode.NOT_FOUND,
                "invalid",
                f"model {quoted(request.model)} is not served here; served: "
                f"{', '.join(sorted(self.models))}",
                ErrorFacts(field="model", resource=("model", request.model)),
            )
        return pb.DescribeModelResponse(model=self._model_info(self.models[request.model]))

    async def VisualizeFilters(self, data: bytes, context: Any) -> None:  # noqa: N802
        """Accepted, one FilterResult per filter as it finishes, Grid, Summary."""
        request = await self._decode(data, pb.VisualizeFiltersRequest, context)
        client = current_caller()
        request_id = uuid.uuid4().hex[:16]
        logger = logging.LoggerAdapter(log, {"request_id": request_id, "client": client})
        if not self.ready:
            await self._refuse(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "not_ready",
                "models are still loading",
                ErrorFacts(retry_after=5),
            )
        if self.draining:
            await self._refuse(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "draining",
                "this server is shutting down; another replica will answer",
                ErrorFacts(retry_after=1),
            )
        try:
            with self.admission.admit(client) as slot:
                plan, preset, fmt = await self._plan(request, context, request_id)
                work = await self._submit(request_id, plan, client)
                logger.info(
                    "accepted %d filters of %s/%s (%s, seed %d, %d cached)",
                    len(plan.filters),
                    plan.params.model,
                    plan.params.layer,
                    preset,
                    plan.seed,
                    len(work.cached),
                )
                await self._stream(work, slot, request, preset, fmt, context, logger)
        except RefusedError as error:
            self._warn.warning(
                (client, error.reason),
                "refused a stream of %s (%s): %s",
                client,
                error.reason,
                error,
            )
            subject = f"client:{client}" if error.reason.startswith("client") else "server"
            await self._refuse(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                error.reason,
                str(error),
                ErrorFacts(quota=f"{subject}/{error.reason}", retry_after=error.retry_after),
            )

    # --- VisualizeFilters, step by step ---------------------------------------------------

    async def _plan(
        self, request: Any, context: Any, request_id: str
    ) -> tuple[Plan, str, pb.ImageFormat]:
        """The validated plan, preset name and image format, or an INVALID_ARGUMENT."""
        try:
            preset = preset_name(request)
            if request.preset == pb.PRESET_UNSPECIFIED and request.model in self.models:
                preset = self.models[request.model].default_preset
            precision = precision_name(request)
            fmt = image_format(request)
            plan = await asyncio.get_running_loop().run_in_executor(
                self._planner,
                functools.partial(
                    make_plan,
                    self.models,
                    preset,
                    overrides_of(request),
                    filters_of(request),
                    precision,
                    request.seed if request.HasField("seed") else None,
                    self.limits,
                    self.default_precision,
                ),
            )
            check_grid_fits(plan, request.grid.disabled, self.max_message_bytes)
        except UnknownModelError as error:
            facts = ErrorFacts(field="model", resource=("model", error.model))
            await self._refuse(context, grpc.StatusCode.NOT_FOUND, "invalid", str(error), facts)
        except InvalidRequestError as error:
            reason = "over_budget" if isinstance(error, OverBudgetError) else "invalid"
            facts = ErrorFacts(field=field_path(error.field) or None)
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, reason, str(error), facts)
        except Exception:  # a bug of ours, not the client's mistake: never UNKNOWN
            log.exception("could not plan request %s", request_id)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"the server failed to plan this request (request id {request_id}); "
                "its log has the details",
            )
        return plan, preset, fmt

    async def _submit(self, request_id: str, plan: Plan, client: str) -> "_Work":
        """Find what the cache holds; queue the rest (QueueFullError when it does not fit)."""
        work = _Work(request_id, plan, client)
        if self.cache is not None and self.cache.available():
            model = self.models[plan.params.model]
            work.keys = filter_keys(plan, model.cache_identity)
            side = plan.params.output_size
            work.expect = Expectation(
                shape=(side, side, model.channels),
                max_steps=plan.params.max_steps(),
                max_restarts=plan.params.revive,
            )
            nothing: set[int] = set()
            present = await self._ask_cache(self.cache.present, nothing, work.keys)
            work.cached = [index for index in plan.filters if index in present]
        self._queue(work, [index for index in plan.filters if index not in work.cached])
        return work

    def _queue(self, work: "_Work", filters: list[int]) -> None:
        """Hand `filters` of the request to the scheduler (nothing when empty)."""
        if filters:
            plan = dataclasses.replace(work.plan, filters=tuple(filters))
            loop = asyncio.get_running_loop()
            handle = self.scheduler.submit(work.request_id, plan, loop, work.client, work.keys)
            work.handles.append(handle)

    async def _ask_cache(self, call: Callable[..., T], fallback: T, *args: Any) -> T:
        """`call(*args)` on the cache's threads; `fallback` once it has run LOOKUP_SECONDS.

        The deadline counts from when a thread takes the call: waiting for a
        thread behind other lookups (many requests at once) is load, not a
        fault of the cache, and is bounded by the stream admission limits.
        """
        cache = self.cache
        assert cache is not None
        started: list[float] = []

        def timed() -> T:
            started.append(time.monotonic())
            return call(*args) if cache.available() else fallback  # it may rest by now

        future = asyncio.get_running_loop().run_in_executor(self._lookups, timed)
        while True:
            left = started[0] + LOOKUP_SECONDS - time.monotonic() if started else LOOKUP_SECONDS
            try:
                return await asyncio.wait_for(asyncio.shield(future), max(0.0, left))
            except TimeoutError:
                if started and time.monotonic() >= started[0] + LOOKUP_SECONDS:
                    cache.timed_out("lookup", LOOKUP_SECONDS)
                    return fallback

    def _cancel(self, work: "_Work") -> None:
        for handle in work.handles:
            self.scheduler.cancel(handle)

    async def _send(self, context: Any, message: pb.VisualizeFiltersResponse) -> None:
        """Write one message, or StalledError (holding the pending write) after the stall limit."""
        write = asyncio.ensure_future(context.write(message))
        try:
            await asyncio.wait_for(asyncio.shield(write), self.stall_seconds)
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

    async def _stream(
        self,
        work: "_Work",
        slot: Slot,
        request: pb.VisualizeFiltersRequest,
        preset: str,
        fmt: pb.ImageFormat,
        context: Any,
        logger: logging.LoggerAdapter,
    ) -> None:
        plan = work.plan
        labels = (plan.params.model, plan.params.layer, preset)
        self.metrics.in_flight.inc()
        started, outcome = time.perf_counter(), "cancelled"
        tally = _Tally(started, len(plan.filters))
        try:
            async with asyncio.timeout(self.max_stream_seconds):
                model = self.models[plan.params.model]
                accepted = pb.Accepted(
                    request_id=work.request_id,
                    params=resolved_params(plan, preset, fmt, request.grid.disabled),
                    filter_count=len(plan.filters),
                    filters=plan.filters,
                    weights_source=model.weights_source,
                    weights_sha256=model.weights_sha256,
                    device=model.device.description,
                    cached_filters=work.cached,
                )
                await self._send(context, pb.VisualizeFiltersResponse(accepted=accepted))
                grid = None if request.grid.disabled else GridCollector(plan.grid, tally.total)
                try:
                    await self._send_filters(_Outbound(work, fmt, context, labels, tally, grid))
                except _EngineFailedError as failure:
                    outcome = "error"
                    logger.error("request failed: %s", failure)
                    await context.abort(
                        grpc.StatusCode.INTERNAL,
                        f"the engine failed on a batch of this request: {failure}",
                    )
                await self._send_grid_and_summary(fmt, context, tally, grid)
                outcome = "ok"
                logger.info(
                    "finished: %d kept, %d dead, %.2fs",
                    tally.kept,
                    tally.done - tally.kept,
                    time.perf_counter() - started,
                )
        except StalledError as stall:
            # gRPC cannot drop the unread message, and the final status cannot overtake it,
            # so the work and the stream slot are given back now and the status is sent
            # once the client reads it; if it never does, its cancel, deadline or
            # disconnect ends the call. Meanwhile it holds only that one message.
            outcome = "stalled"
            self._cancel(work)
            slot.release()
            self.metrics.rejected.labels("stalled").inc()
            self._warn.warning(
                (work.client, "stalled"),
                "ended a stream of %s: its client read nothing for %.0f s",
                work.client,
                self.stall_seconds,
            )
            try:
                await stall.write
            except Exception as error:  # the client left without reading
                raise CallEndedError from error
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the client read nothing for {self.stall_seconds:.0f} s; the stream was ended",
            )
        except TimeoutError:
            outcome = "expired"
            self._cancel(work)
            slot.release()
            await self._refuse(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "lifetime",
                f"the stream ran for {self.max_stream_seconds:.0f} s, this server's limit; ask "
                "for fewer filters or split the request",
            )
        finally:
            if outcome != "ok":
                self._cancel(work)
            if outcome == "cancelled":
                logger.info("cancelled after %d of %d filters", tally.done, tally.total)
            self.metrics.in_flight.dec()
            self.metrics.request_duration.labels(*labels, outcome).observe(
                time.perf_counter() - started
            )

    async def _send_filters(self, out: "_Outbound") -> None:
        """One FilterResult per filter: the cached ones first, then each as it finishes.

        Cached pictures are fetched a few at a time as they are sent; one gone
        since the lookup (evicted, corrupt) is computed after all.
        """
        work, late = out.work, []
        for start in range(0, len(work.cached), FETCH_BATCH):
            chunk = work.cached[start : start + FETCH_BATCH]
            found: dict[int, FilterOutcome] = {}
            if self.cache is not None and self.cache.available():  # resting: not even queued
                wanted = {index: work.keys[index] for index in chunk}
                found = await self._ask_cache(self.cache.fetch, {}, wanted, work.expect)
            for index in chunk:
                if index in found:
                    await self._send_result(found[index], out)
                else:
                    late.append(index)
        self._queue(work, late)
        for handle in work.handles:
            while not isinstance(event := await self.scheduler.next_event(handle), Done):
                if isinstance(event, Failed):
                    raise _EngineFailedError(event.error)
                assert isinstance(event, Result)
                self.metrics.filter_queue_wait.observe(event.queue_seconds)
                self.metrics.filter_compute.observe(event.outcome.seconds)
                await self._send_result(event.outcome, out)

    async def _send_result(self, result: FilterOutcome, out: "_Outbound") -> None:
        work, tally, grid = out.work, out.tally, out.grid
        tally.add(result.dead, result.seconds, result.revived, result.cached)
        if tally.done == 1:
            self.metrics.time_to_first_filter.labels(*out.labels).observe(
                time.perf_counter() - tally.started
            )
        message = pb.FilterResult(
            index=result.index,
            loss=result.loss,
            dead=result.dead,
            steps=result.steps,
            seconds=result.seconds,
            done=tally.done,
            total=tally.total,
            revived=result.revived,
            cached=result.cached,
            image_key=work.keys.get(result.index, ""),
        )
        if result.image is not None:
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(self._encoder, picture_of, result, out.fmt)
            message.image.CopyFrom(image)
        await self._send(out.context, pb.VisualizeFiltersResponse(filter=message))
        if grid is not None:
            grid.add(result)

    async def _send_grid_and_summary(
        self, fmt: pb.ImageFormat, context: Any, tally: "_Tally", grid: GridCollector | None
    ) -> None:
        """The stitched grid (when asked for and any filter lived), then the Summary."""
        loop = asyncio.get_running_loop()
        if grid is not None:
            stitch_started = time.perf_counter()
            stitched = await loop.run_in_executor(self._encoder, grid.build)
            self.metrics.stitch_duration.observe(time.perf_counter() - stitch_started)
            if stitched is not None:
                image = await loop.run_in_executor(self._encoder, encode_image, stitched.image, fmt)
                message = pb.Grid(
                    image=image, n=stitched.n, margin=stitched.margin, order=stitched.order
                )
                await self._send(context, pb.VisualizeFiltersResponse(grid=message))
        summary = pb.Summary(
            kept=tally.kept,
            dead=tally.done - tally.kept,
            total_seconds=time.perf_counter() - tally.started,
            mean_filter_seconds=tally.filter_seconds / max(1, tally.done),
            revived=tally.revived,
            cached=tally.cached,
        )
        await self._send(context, pb.VisualizeFiltersResponse(summary=summary))


def _retrieve(future: asyncio.Future) -> None:
    """Mark a finished future's outcome as seen (it needs no one to act on it)."""
    if not future.cancelled():
        future.exception()


class _EngineFailedError(Exception):
    """The engine failed on a batch of the request (the message says how)."""


@dataclass
class _Tally:
    """A stream's running counts."""

    started: float
    total: int = 0
    done: int = 0
    kept: int = 0
    revived: int = 0  # filters alive after a restart
    cached: int = 0  # filters served from the result cache
    filter_seconds: float = 0.0

    def add(self, dead: bool, seconds: float, revived: int, cached: bool) -> None:
        """Count one finished filter."""
        self.done += 1
        self.kept += not dead
        self.revived += bool(revived) and not dead
        self.cached += cached
        self.filter_seconds += seconds


@dataclass
class _Work:
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
class _Outbound:
    """Where a stream's filter results go, and what each one updates."""

    work: _Work
    fmt: pb.ImageFormat
    context: Any
    labels: tuple[str, str, str]
    tally: _Tally
    grid: GridCollector | None

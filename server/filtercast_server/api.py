"""The gRPC servicer: validate, plan, submit to the scheduler, stream events back.

It never touches TensorFlow: plans come from planning, pictures from the
scheduler, encoding from wire. Every bad request is answered with
INVALID_ARGUMENT (NOT_FOUND for an unknown model) before any work starts.
"""

import asyncio
import functools
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc
from filtercast_server.ascent import FilterOutcome
from filtercast_server.errors import InvalidRequestError, UnknownModelError, quoted
from filtercast_server.grid import build_grid
from filtercast_server.metrics import Metrics
from filtercast_server.models import MODEL_SPECS, LoadedModel
from filtercast_server.planning import make_plan
from filtercast_server.presets import Limits
from filtercast_server.scheduler import Done, Failed, QueueFullError, Result, Scheduler
from filtercast_server.wire import (
    PRECISION_ENUMS,
    check_grid_fits,
    encode_image,
    filters_of,
    image_format,
    overrides_of,
    precision_name,
    preset_name,
    resolved_params,
)

log = logging.getLogger(__name__)


def counted(method: str) -> Callable:
    """Count each call of a servicer method by its final status code."""

    def decorate(handler: Callable) -> Callable:
        def record(
            metrics: Metrics, context: grpc.aio.ServicerContext, error: BaseException | None
        ):
            code = context.code()
            if code is None:
                code = (
                    grpc.StatusCode.CANCELLED
                    if isinstance(error, asyncio.CancelledError)
                    else (grpc.StatusCode.UNKNOWN if error else grpc.StatusCode.OK)
                )
            metrics.handled.labels(method, code.name).inc()

        if inspect.isasyncgenfunction(handler):  # a server-streaming method

            @functools.wraps(handler)
            async def stream(self, request, context):
                error = None
                try:
                    async for event in handler(self, request, context):
                        yield event
                except BaseException as caught:
                    error = caught
                    raise
                finally:
                    record(self.metrics, context, error)

            return stream

        @functools.wraps(handler)
        async def unary(self, request, context):
            error = None
            try:
                return await handler(self, request, context)
            except BaseException as caught:
                error = caught
                raise
            finally:
                record(self.metrics, context, error)

        return unary

    return decorate


class FilterVisualizerServicer(pb_grpc.FilterVisualizerServiceServicer):
    """filtercast.v1.FilterVisualizerService on a scheduler and loaded models."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        scheduler: Scheduler,
        metrics: Metrics,
        limits: Limits,
        max_message_bytes: int,
        default_precision: str = "auto",
    ) -> None:
        self.models = models
        self.scheduler = scheduler
        self.metrics = metrics
        self.limits = limits
        self.max_message_bytes = max_message_bytes
        self.default_precision = default_precision
        self.ready = False
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="filtercast-encode")

    def _model_info(self, model: LoadedModel) -> pb.ModelInfo:
        auto = model.device.resolve("auto").value
        return pb.ModelInfo(
            name=model.name,
            weights_source=model.weights_source,
            weights_sha256=model.weights_sha256,
            device=model.device.description,
            auto_precision=PRECISION_ENUMS[auto],
            default_layer=model.spec.default_layer,
            layers=[
                pb.LayerInfo(name=i.name, type=i.type, channels=i.channels, output_stride=i.stride)
                for i in model.layers
            ],
        )

    @counted("ListModels")
    async def ListModels(self, request, context):  # noqa: N802 (gRPC's method name)
        """Every loaded model."""
        return pb.ListModelsResponse(models=[self._model_info(m) for m in self.models.values()])

    @counted("DescribeModel")
    async def DescribeModel(self, request, context):  # noqa: N802
        """One loaded model, or NOT_FOUND listing the served ones."""
        if request.model not in self.models:
            known = ", ".join(sorted(MODEL_SPECS))
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {quoted(request.model)} is not served here; served: "
                f"{', '.join(sorted(self.models))} (known architectures: {known})",
            )
        return pb.DescribeModelResponse(model=self._model_info(self.models[request.model]))

    @counted("VisualizeFilters")
    async def VisualizeFilters(self, request, context) -> AsyncIterator:  # noqa: N802
        """Accepted, one FilterResult per filter as it finishes, Grid, Summary."""
        request_id = uuid.uuid4().hex[:16]
        logger = logging.LoggerAdapter(log, {"request_id": request_id})
        if not self.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry")
        try:
            preset = preset_name(request)
            precision = precision_name(request)
            if precision == "auto":
                precision = self.default_precision
            fmt = image_format(request)
            plan = make_plan(
                self.models,
                preset,
                overrides_of(request),
                filters_of(request),
                precision,
                request.seed if request.HasField("seed") else None,
                self.limits,
            )
            check_grid_fits(plan, request.grid.disabled, self.max_message_bytes)
        except UnknownModelError as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        labels = (plan.params.model, plan.params.layer, preset)
        try:
            handle = self.scheduler.submit(request_id, plan, asyncio.get_running_loop())
        except QueueFullError as error:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        logger.info(
            "accepted %d filters of %s/%s (%s, seed %d)",
            len(plan.filters),
            plan.params.model,
            plan.params.layer,
            preset,
            plan.seed,
        )
        self.metrics.in_flight.inc()
        started, outcome = time.perf_counter(), "cancelled"
        outcomes: list[FilterOutcome] = []
        loop = asyncio.get_running_loop()
        try:
            yield pb.VisualizeFiltersResponse(
                accepted=pb.Accepted(
                    request_id=request_id,
                    params=resolved_params(plan, preset, fmt, request.grid.disabled),
                    filter_count=len(plan.filters),
                    filters=plan.filters,
                )
            )
            while True:
                event = await handle.events.get()
                if isinstance(event, Done):
                    break
                if isinstance(event, Failed):
                    outcome = "error"
                    logger.error("request failed: %s", event.error)
                    await context.abort(
                        grpc.StatusCode.INTERNAL,
                        f"the engine failed on a batch of this request: {event.error}",
                    )
                assert isinstance(event, Result)
                result = event.outcome
                outcomes.append(result)
                if len(outcomes) == 1:
                    self.metrics.time_to_first_filter.labels(*labels).observe(
                        time.perf_counter() - started
                    )
                self.metrics.filter_queue_wait.observe(event.queue_seconds)
                self.metrics.filter_compute.observe(result.seconds)
                message = pb.FilterResult(
                    index=result.index,
                    loss=result.loss,
                    dead=result.dead,
                    steps=result.steps,
                    seconds=result.seconds,
                    done=len(outcomes),
                    total=len(plan.filters),
                )
                if result.image is not None:
                    message.image.CopyFrom(
                        await loop.run_in_executor(self._encoder, encode_image, result.image, fmt)
                    )
                yield pb.VisualizeFiltersResponse(filter=message)
            if not request.grid.disabled:
                stitch_started = time.perf_counter()
                grid = await loop.run_in_executor(self._encoder, build_grid, outcomes, plan.params)
                self.metrics.stitch_duration.observe(time.perf_counter() - stitch_started)
                if grid is not None:
                    image = await loop.run_in_executor(self._encoder, encode_image, grid.image, fmt)
                    yield pb.VisualizeFiltersResponse(
                        grid=pb.Grid(image=image, n=grid.n, margin=grid.margin, order=grid.order)
                    )
            kept = sum(1 for o in outcomes if not o.dead)
            total = time.perf_counter() - started
            yield pb.VisualizeFiltersResponse(
                summary=pb.Summary(
                    kept=kept,
                    dead=len(outcomes) - kept,
                    total_seconds=total,
                    mean_filter_seconds=sum(o.seconds for o in outcomes) / max(1, len(outcomes)),
                )
            )
            outcome = "ok"
            logger.info("finished: %d kept, %d dead, %.2fs", kept, len(outcomes) - kept, total)
        finally:
            if outcome != "ok":
                self.scheduler.cancel(handle)
            if outcome == "cancelled":
                logger.info("cancelled after %d of %d filters", len(outcomes), len(plan.filters))
            self.metrics.in_flight.dec()
            self.metrics.request_duration.labels(*labels, outcome).observe(
                time.perf_counter() - started
            )

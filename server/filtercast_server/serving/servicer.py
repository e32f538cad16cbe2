"""The gRPC servicer: decode, admit, plan, look in the cache, submit, then stream back.

It never touches TensorFlow: plans come from planning, pictures from the
scheduler, messages from wire, the stream itself from streams. Its methods
take the request's raw bytes, so an undecodable request is INVALID_ARGUMENT
like any other bad request (grpc.aio would answer UNKNOWN itself). Every bad
request is answered with INVALID_ARGUMENT (NOT_FOUND for an unknown model)
before any work starts; a request over a limit with RESOURCE_EXHAUSTED and a
RetryInfo hint.
"""

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from filtercast.contract import MAX_MESSAGE_BYTES
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.accentuation import accentuate_of
from filtercast_server.cache.entry import Expectation
from filtercast_server.cache.keys import filter_keys
from filtercast_server.cache.results import ResultCache
from filtercast_server.datasets import DatasetGoneError
from filtercast_server.errors import InvalidRequestError, NotFoundError, RefusedError, quoted
from filtercast_server.images import ImageError
from filtercast_server.jobs import Plan
from filtercast_server.objectives import objectives_of
from filtercast_server.observability.logs import ThrottledLog
from filtercast_server.params import Limits
from filtercast_server.planning import OverBudgetError, check_groups_fit, make_plan
from filtercast_server.serving.admission import NewStepBudget, StreamAdmission
from filtercast_server.serving.analysis import Analyses
from filtercast_server.serving.examples import (
    DatasetChangedError,
    DatasetExamples,
    IndexBuildError,
)
from filtercast_server.serving.interceptor import current_caller
from filtercast_server.serving.scheduler import Scheduler
from filtercast_server.serving.status import ErrorFacts, refuse
from filtercast_server.serving.streams import Stream, StreamTools, Work
from filtercast_server.serving.wire import (
    accepted_message,
    check_grid_fits,
    field_path,
    filters_of,
    image_format,
    model_info,
    overrides_of,
    precision_name,
    preset_infos,
    preset_name,
    preview_every_of,
    resolved_params,
)

if TYPE_CHECKING:  # both import TensorFlow; the servicer only reads them
    from filtercast_server.engine.models import LoadedModel
    from filtercast_server.observability.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
LOOKUP_SECONDS = 2.0  # a lookup running longer is skipped (reads rest): the filters compute
LOOKUP_THREADS = 4  # lookups at once; more wait their turn, which is not counted against them


@dataclass(frozen=True)
class ServingPolicy:
    """What a request may ask for and how long its stream may take."""

    limits: Limits
    server_limits: pb.ServerLimits  # what ListModels tells clients of all the limits
    stall_seconds: float = 60.0  # a client that reads nothing this long loses its stream
    max_stream_seconds: float = 3600.0  # the deadline of every stream
    max_message_bytes: int = MAX_MESSAGE_BYTES


async def decode(data: bytes, kind: type[Message], context: Any, metrics: "Metrics") -> Any:
    """The request in `data`, or the call ends INVALID_ARGUMENT (logged once a minute)."""
    try:
        return kind.FromString(data)
    except DecodeError as error:
        caller = current_caller()
        _warn.warning(
            (caller, "malformed"), "undecodable %s from %s: %s", kind.__name__, caller, error
        )
        metrics.rejected.labels("malformed").inc()
        await refuse(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"could not decode the request as {kind.DESCRIPTOR.full_name}: {error}",
        )


_warn = ThrottledLog(log)


class FilterVisualizerServicer:
    """filtercast.v1.FilterVisualizerService on a scheduler and loaded models."""

    def __init__(
        self,
        models: "dict[str, LoadedModel]",
        scheduler: Scheduler,
        policy: ServingPolicy,
        *,
        admission: StreamAdmission,
        metrics: "Metrics",
        cache: ResultCache | None = None,
        new_steps: NewStepBudget | None = None,
        analyses: Analyses | None = None,
        examples: DatasetExamples | None = None,
    ) -> None:
        self.models = models
        self.policy = policy
        self.admission = admission
        self.new_steps = new_steps
        self.analyses = analyses
        self.examples = examples
        self.metrics = metrics
        self.cache = cache
        # Planning may build a layer's extractor (Keras): off the event loop, one at a time.
        self._planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filtercast-plan")
        # Cache lookups block on a disk or a network: off the event loop too.
        self._lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="filtercast-cache")
        self.streams = StreamTools(
            scheduler=scheduler,
            cache=cache,
            metrics=metrics,
            encoder=ThreadPoolExecutor(max_workers=2, thread_name_prefix="filtercast-encode"),
            ask_cache=self._ask_cache,
            stall_seconds=policy.stall_seconds,
            max_stream_seconds=policy.max_stream_seconds,
            warn=_warn,
        )

    async def _refuse(
        self, context: Any, code: grpc.StatusCode, reason: str, message: str, facts: ErrorFacts
    ) -> None:
        """Count the refusal by reason and end the call with `code` and its details."""
        self.metrics.rejected.labels(reason).inc()
        await refuse(context, code, message, facts)

    # --- methods --------------------------------------------------------------------

    async def ListModels(self, data: bytes, context: Any) -> pb.ListModelsResponse:  # noqa: N802
        """Every loaded model, every preset with its defaults, and this server's limits."""
        await decode(data, pb.ListModelsRequest, context, self.metrics)
        return pb.ListModelsResponse(
            models=[model_info(m) for m in self.models.values()],
            presets=preset_infos(),
            limits=self.policy.server_limits,
        )

    async def DescribeModel(self, data: bytes, context: Any) -> pb.DescribeModelResponse:  # noqa: N802
        """One loaded model, or NOT_FOUND listing the served ones."""
        request = await decode(data, pb.DescribeModelRequest, context, self.metrics)
        if request.model not in self.models:
            await self._refuse(
                context,
                grpc.StatusCode.NOT_FOUND,
                "invalid",
                f"model {quoted(request.model)} is not served here; served: "
                f"{', '.join(sorted(self.models))}",
                ErrorFacts(field="model", resource=("model", request.model)),
            )
        return pb.DescribeModelResponse(model=model_info(self.models[request.model]))

    async def VisualizeFilters(self, data: bytes, context: Any) -> None:  # noqa: N802
        """Accepted, one FilterResult per filter as it finishes, Grid, Summary."""
        request = await decode(data, pb.VisualizeFiltersRequest, context, self.metrics)
        client, request_id = current_caller(), uuid.uuid4().hex[:16]
        try:
            with self.admission.admit(client) as slot:
                plan, preset, fmt = await self._plan(request, context, request_id)
                work = await self._look_up(Work(request_id, plan, client))
                self._charge_new_step(work)
                labels = (plan.params.model, plan.params.layer, preset)
                stream = Stream(self.streams, work, context, labels, not request.grid.disabled, fmt)
                stream.queue([i for i in plan.filters if i not in work.cached])
                stream.logger.info(
                    "accepted %d filters of %s/%s (%s, seed %d, %d cached)",
                    len(plan.filters),
                    *labels,
                    plan.seed,
                    len(work.cached),
                )
                model = self.models[plan.params.model]
                params = resolved_params(plan, preset, fmt, request.grid.disabled)
                await stream.run(
                    accepted_message(request_id, plan, model, params, work.cached), slot
                )
        except RefusedError as error:
            await self._refused(context, client, error)

    async def AnalyzeImage(self, data: bytes, context: Any) -> pb.AnalyzeImageResponse:  # noqa: N802
        """The top channels of a layer on one image, with their heatmaps."""
        request = await decode(data, pb.AnalyzeImageRequest, context, self.metrics)
        client = current_caller()
        if self.analyses is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server analyzes no images")
        assert self.analyses is not None
        try:
            with self.analyses.admission.admit(client):
                return await self.analyses.run(self.analyses.plan(request), request.image)
        except RefusedError as error:
            await self._refused(context, client, error)
        except InvalidRequestError as error:
            reason = "image" if isinstance(error, ImageError) else ""
            await self._invalid(context, error, reason, visualize=False)
        except Exception:  # a bug of ours, not the client's mistake: never UNKNOWN
            log.exception("could not analyze an image of %s", client)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                "the server failed to analyze this image; its log has the details",
            )
        raise AssertionError("unreachable: every branch above ends the call")

    async def DatasetExamples(self, data: bytes, context: Any) -> None:  # noqa: N802
        """Progress while the dataset's index builds, each channel's best images, a summary."""
        request = await decode(data, pb.DatasetExamplesRequest, context, self.metrics)
        client = current_caller()
        examples = self.examples
        if examples is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server has no datasets")
        assert examples is not None
        stall = self.policy.stall_seconds
        try:
            with examples.admission.admit(client):
                # Planning may build a layer's extractor (Keras): off the event loop.
                loop = asyncio.get_running_loop()
                plan = await loop.run_in_executor(self._planner, examples.plan, request)
                async with asyncio.timeout(self.policy.max_stream_seconds):
                    await examples.run(
                        plan, lambda message: _write_within(context, message, stall), client
                    )
        except RefusedError as error:
            await self._refused(context, client, error)
        except InvalidRequestError as error:
            await self._invalid(context, error, visualize=False)
        except _ClientGoneError:
            return  # the call ended under a write: nobody is left to tell
        except _StalledError as stalled:
            try:
                await stalled.write  # the status cannot overtake it; the client's exit ends both
            except Exception:
                return
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the client read nothing for {stall:.0f} s"
            )
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the stream ran past {self.policy.max_stream_seconds:.0f} s (the server's "
                "--max-stream-seconds); the index goes on building: ask again later",
            )
        except DatasetGoneError as error:
            log.error("%s", error)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{error}; ask its operator")
        except DatasetChangedError as error:
            await context.abort(
                grpc.StatusCode.ABORTED,
                f"the dataset changed while its examples were read ({error}); retry: the "
                "index is built again for its new content",
            )
        except IndexBuildError as error:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the dataset's index could not be built: {error}"
            )
        except Exception:  # a bug of ours, not the client's mistake: never UNKNOWN
            log.exception("could not answer dataset examples for %s", client)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                "the server failed to find these examples; its log has the details",
            )

    async def _refused(self, context: Any, client: str, error: RefusedError) -> None:
        """End the call RESOURCE_EXHAUSTED with the quota and a retry hint (logged throttled)."""
        _warn.warning(
            (client, error.reason), "refused a call of %s (%s): %s", client, error.reason, error
        )
        subject = f"client:{client}" if error.reason.startswith("client") else "server"
        await self._refuse(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            error.reason,
            str(error),
            ErrorFacts(quota=f"{subject}/{error.reason}", retry_after=error.retry_after),
        )

    async def _invalid(
        self, context: Any, error: InvalidRequestError, reason: str = "", visualize: bool = True
    ) -> None:
        """End the call NOT_FOUND (unknown model, dataset) or INVALID_ARGUMENT naming the field.

        A VisualizeFilters field is named by its path (a parameter is under
        `overrides`); other requests' fields are top-level.
        """
        if isinstance(error, NotFoundError):
            facts = ErrorFacts(field=error.kind, resource=(error.kind, error.name))
            await self._refuse(context, grpc.StatusCode.NOT_FOUND, "invalid", str(error), facts)
        reason = reason or ("over_budget" if isinstance(error, OverBudgetError) else "invalid")
        field = field_path(error.field) if visualize else error.field
        facts = ErrorFacts(field=field or None)
        await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, reason, str(error), facts)

    # --- VisualizeFilters, step by step ---------------------------------------------------

    async def _plan(
        self, request: Any, context: Any, request_id: str
    ) -> tuple[Plan, str, pb.ImageFormat]:
        """The validated plan, preset name and image format, or an INVALID_ARGUMENT."""
        try:
            preset = preset_name(request)
            if request.preset == pb.PRESET_UNSPECIFIED and request.model in self.models:
                preset = self.models[request.model].default_preset
            fmt = image_format(request)
            objectives, diversity, interpolation = objectives_of(request)
            accentuate = accentuate_of(request)
            plan = await asyncio.get_running_loop().run_in_executor(
                self._planner,
                lambda: make_plan(
                    self.models,
                    preset=preset,
                    overrides=overrides_of(request),
                    filters=filters_of(request),
                    precision=precision_name(request),
                    seed=request.seed if request.HasField("seed") else None,
                    limits=self.policy.limits,
                    objectives=objectives,
                    diversity=diversity,
                    interpolation=interpolation,
                    accentuate=accentuate,
                ),
            )
            plan = dataclasses.replace(plan, preview_every=preview_every_of(request))
            check_grid_fits(plan, request.grid.disabled, self.policy.max_message_bytes)
            check_groups_fit(plan, self.streams.scheduler.engine.batch_size(plan.params))
        except InvalidRequestError as error:
            await self._invalid(context, error)
        except Exception:  # a bug of ours, not the client's mistake: never UNKNOWN
            log.exception("could not plan request %s", request_id)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"the server failed to plan this request (request id {request_id}); "
                "its log has the details",
            )
        return plan, preset, fmt

    def _charge_new_step(self, work: Work) -> None:
        """A request that would trace a new step spends its client's budget (RefusedError)."""
        plan = work.plan
        if self.new_steps is None or len(work.cached) == len(plan.filters):
            return  # unbounded, or nothing to compute
        engine = self.streams.scheduler.engine
        if not engine.compiled(plan.params, plan.precision, plan.structure):
            self.new_steps.charge(work.client)

    async def _look_up(self, work: Work) -> Work:
        """Which of the request's filters the cache holds (none while it rests)."""
        if self.cache is None or not self.cache.available():
            return work
        plan = work.plan
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
        # A group is served from the cache whole, or computed whole (its rows are coupled).
        work.cached = [
            index
            for unit in plan.units(plan.filters)
            if all(index in present for index in unit)
            for index in unit
        ]
        return work

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


class _ClientGoneError(Exception):
    """The call ended under a write (the client left, or its connection broke)."""


class _StalledError(Exception):
    """The client read nothing within the stall limit; `write` is still pending."""

    def __init__(self, write: asyncio.Future) -> None:
        super().__init__("stalled")
        self.write = write


async def _write_within(context: Any, message: Message, seconds: float) -> None:
    """Write `message`, or _StalledError once the client has read nothing for `seconds`."""
    write = asyncio.ensure_future(context.write(message))
    try:
        await asyncio.wait_for(asyncio.shield(write), seconds)
    except TimeoutError:
        raise _StalledError(write) from None
    except asyncio.CancelledError:
        write.cancel()
        raise
    except Exception as error:  # grpc.aio's or the gateway's: the client is gone
        raise _ClientGoneError from error

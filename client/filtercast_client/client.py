"""Client library of the filtercast service (never imports TensorFlow or the server).

    from filtercast_client import Client, FilterImage

    with Client("localhost:50051") as client:
        for event in client.visualize(layer="block5_conv1", filters="0:16", size=64):
            if isinstance(event, FilterImage) and event.image is not None:
                ...

Addresses: ``host:port``, ``[ipv6]:port``, a gRPC target such as
``dns:///filtercast.example:50051`` (every address the name resolves to is
used, round-robin), or a list of ``host:port`` (hostnames resolved once, when
the client is made). ``tls=`` reaches a TLS (or mTLS) server, ``token=``
sends a bearer token on every call. Failures raise the typed errors of
filtercast_client.errors; leaving a stream early (``break``, or dropping the
iterator) cancels it on the server.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc

from filtercast.contract import ContractError
from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc
from filtercast_client.analysis import ImageAnalysis, ImageInput, analyze_request
from filtercast_client.channel import (
    RETRY_POLICY,
    TLS,
    Target,
    backends_of,
    backoff,
    channel_options,
    target_of,
)
from filtercast_client.errors import (
    Cancelled,
    FiltercastError,
    Unavailable,
    from_rpc_error,
    retry_after,
)
from filtercast_client.events import (
    Accepted,
    Event,
    EventChecker,
    FilterImage,
    GridImage,
    ModelInfo,
    ServerInfo,
    Summary,
)
from filtercast_client.examples import (
    DatasetExamples,
    IndexProgress,
    collected,
    examples_request,
    typed_events,
)
from filtercast_client.request import build_request
from filtercast_client.shards import SpreadVisualization, filters_of

__all__ = [
    "TLS",
    "Accepted",
    "AsyncClient",
    "AsyncVisualization",
    "Client",
    "Event",
    "FilterImage",
    "GridImage",
    "Summary",
    "Visualization",
    "build_request",
    "retry_after",
]


class _Stream:
    """Retry, cancel and checking bookkeeping shared by the sync and async streams."""

    def __init__(self, start: Callable[[float | None], Any], timeout: float | None, attempts: int):
        self._start = start
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._attempts = max(1, attempts)
        self._call: Any = None
        self._cancelled = False

    def _remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _begin(self) -> Any:
        self._call = self._start(self._remaining())
        if self._cancelled:  # cancelled while it started: stop it at once
            self._call.cancel()
        return self._call

    def _retry_delay(self, error: FiltercastError, attempt: int, started: bool) -> float | None:
        """Seconds to wait before trying again, or None to give up with `error`."""
        if started or self._cancelled or not isinstance(error, Unavailable):
            return None
        if attempt + 1 >= self._attempts:
            return None
        delay = backoff(attempt)
        remaining = self._remaining()
        return None if remaining is not None and remaining <= delay else delay

    def _stop(self) -> None:
        """The consumer left before the end: cancel the call so the server stops its work."""
        if self._call is not None:
            self._call.cancel()

    def _release(self) -> None:
        """Drop the ended call.

        An error's traceback keeps this stream alive, and a gRPC call collected
        only at interpreter exit can hang the process there.
        """
        self._call = None

    def cancel(self) -> None:
        """Stop the stream; the server drops the filters not yet computed.

        Iteration then ends quietly (no Cancelled error for a cancel asked for here).
        """
        self._cancelled = True
        self._stop()


class Visualization(_Stream):
    """The events of one VisualizeFilters stream; iterate it, or cancel it."""

    def __iter__(self) -> Iterator[Event]:
        finished = False
        try:
            for attempt in range(self._attempts):
                checker = EventChecker()
                try:
                    for response in self._begin():
                        yield checker.event(response)
                    checker.end()
                    finished = True
                    return
                except grpc.RpcError as raw:
                    error = from_rpc_error(raw)
                    if self._cancelled and isinstance(error, Cancelled):
                        finished = True
                        return
                    delay = self._retry_delay(error, attempt, checker.accepted is not None)
                    if delay is None:
                        if error is raw:
                            raise
                        raise error from raw
                    time.sleep(delay)
                    if self._cancelled:  # cancelled during the wait: no new call
                        finished = True
                        return
        finally:
            if not finished:
                self._stop()
            self._release()


class AsyncVisualization(_Stream):
    """The events of one VisualizeFilters stream, for asyncio."""

    async def __aiter__(self) -> AsyncIterator[Event]:
        finished = False
        try:
            for attempt in range(self._attempts):
                checker = EventChecker()
                try:
                    async for response in self._begin():
                        yield checker.event(response)
                    checker.end()
                    finished = True
                    return
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._cancelled and not (task and task.cancelling()):
                        finished = True  # our own cancel(), not the task's
                        return
                    raise
                except grpc.RpcError as raw:
                    error = from_rpc_error(raw)
                    if self._cancelled and isinstance(error, Cancelled):
                        finished = True
                        return
                    delay = self._retry_delay(error, attempt, checker.accepted is not None)
                    if delay is None:
                        if error is raw:
                            raise
                        raise error from raw
                    await asyncio.sleep(delay)
                    if self._cancelled:
                        finished = True
                        return
        finally:
            if not finished:
                self._stop()
            self._release()


StreamT = TypeVar("StreamT", bound=_Stream)


class _ClientBase(Generic[StreamT]):
    """What Client and AsyncClient share: channel, credentials, token, requests.

    `addresses`: see the module. `tls` reaches a TLS server (None: plaintext),
    `token` is sent as a bearer token, `attempts` bounds the tries of a call
    that finds no server (UNAVAILABLE; 1: no retry).
    """

    _grpc: Any  # grpc or grpc.aio
    _stream: type[StreamT]

    def __init__(
        self,
        addresses: str | Sequence[str] | Target,
        *,
        tls: TLS | None = None,
        token: str | None = None,
        attempts: int = RETRY_POLICY["maxAttempts"],
    ) -> None:
        try:
            target = addresses if isinstance(addresses, Target) else target_of(addresses)
        except ContractError as error:
            raise ValueError(str(error)) from error
        self.addresses, self.tls, self.token = addresses, tls, token
        options = channel_options(attempts, tls, target.authority)
        if tls is None:
            self.channel = self._grpc.insecure_channel(target.target, options)
        else:
            self.channel = self._grpc.secure_channel(target.target, tls.credentials(), options)
        self.stub = pb_grpc.FilterVisualizerServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.attempts = attempts
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def visualize(
        self,
        *,
        layer: str = "",
        filters: str | Sequence[int] | None = None,
        preset: str = "classic",
        model: str = "",
        size: int | None = None,
        steps: int | None = None,
        step_size: float | None = None,
        overrides: Mapping[str, Any] | None = None,
        seed: int | None = None,
        precision: str = "auto",
        image_format: str = "png",
        grid: bool = True,
        grid_n: int | None = None,
        grid_margin: int | None = None,
        keep_dead_filters: bool = False,
        objectives: Sequence[str | pb.Objective] = (),
        diversity: int = 0,
        diversity_weight: float | None = None,
        interpolate: str | pb.Interpolation | None = None,
        frames: int = 8,
        image: ImageInput | None = None,
        pull: float | None = None,
        pull_space: str = "pixels",
        preview_every: int = 0,
        timeout: float | None = None,
    ) -> StreamT:
        """Start a VisualizeFilters stream: iterate it for Accepted, FilterImages, Grid, Summary.

        layer, model: names as ListModels gives them ("": the preset's). filters: a
            spec ("0:64", "1,5,9", "0:8,100:104", "all"), a list, None: the preset's.
        preset: any of ListModels' presets (classic, upscale, keras_io, robust; any case).
        size, steps, step_size: side in pixels, steps per round, learning rate
            (None: the preset's); `overrides`: any other Overrides field (border, ...).
        seed: reproduces a request (None: the server draws one, see Accepted.seed).
        precision: "auto", "float32", "bfloat16"; image_format: "png", "raw"; grid,
            grid_n, grid_margin, keep_dead_filters: the grid at the end.
        objectives: what to visualize instead of filters, one picture each, in
            the objective grammar ("block5_conv1:12 - 0.5*block5_conv1:40",
            "block5_conv1:12@center", "layer(block4_conv3)", "dense_1:3",
            "direction(block5_conv1, cav.npy)"; see filtercast.contract).
        diversity, diversity_weight: k differing pictures of each objective,
            and how strongly they differ (robust preset).
        interpolate, frames: "A..B" and the frames from A to B (robust preset).
        image, pull, pull_space: every picture starts from this image (path,
            bytes, uint8 array), pulled towards it ("pixels" or "features").
        preview_every: FilterPreview events of the pictures in flight every so many
            steps (0: none). timeout: the deadline, s. Bad arguments raise InvalidRequest.
        """
        fields = {key: value for key, value in locals().items() if key not in ("self", "timeout")}
        message = build_request(**fields)
        return self._stream(
            lambda remaining: self.stub.VisualizeFilters(
                message, timeout=remaining, metadata=self.metadata
            ),
            timeout,
            self.attempts,
        )


class Client(_ClientBase[Visualization]):
    """A connection to one filtercast server, or several balanced round-robin."""

    _grpc = grpc
    _stream = Visualization

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (and those of a spread's servers)."""
        for backend in self.__dict__.pop("_backends", []):
            backend.close()
        self.channel.close()

    def spread(
        self, *, filters: str | Sequence[int] | None, timeout: float | None = None, **request: Any
    ) -> SpreadVisualization:
        """visualize() spread over every server behind the addresses (filtercast_client.shards).

        `filters` names every filter (closed ranges); `request`: visualize's other arguments.
        """
        if "_backends" not in self.__dict__:  # a channel per server; a failing one is left
            self._backends = [
                Client(target, tls=self.tls, token=self.token, attempts=1)
                for target in backends_of(self.addresses)  # type: ignore[arg-type]
            ]
        return SpreadVisualization.over(
            self._backends, filters_of(filters), request, self.attempts, timeout
        )

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def server_info(self, timeout: float | None = 30) -> ServerInfo:
        """The server's models, presets with their defaults, and limits."""
        response = self._unary(self.stub.ListModels, pb.ListModelsRequest(), timeout)
        return ServerInfo.from_message(response)

    def list_models(self, timeout: float | None = 30) -> list[ModelInfo]:
        """Every model the server has loaded."""
        return self.server_info(timeout).models

    def describe(self, model: str = "vgg16", timeout: float | None = 30) -> ModelInfo:
        """One model: weights, device, precision and layers (NotFound if not served)."""
        request = pb.DescribeModelRequest(model=model)
        return ModelInfo.from_message(self._unary(self.stub.DescribeModel, request, timeout).model)

    def analyze(
        self, image: ImageInput, *, timeout: float | None = 60, **fields: Any
    ) -> ImageAnalysis:
        """Which channels of a layer `image` excites, with heatmaps (analyze_request's fields)."""
        request = analyze_request(image, **fields)
        return ImageAnalysis.from_message(self._unary(self.stub.AnalyzeImage, request, timeout))

    def examples(
        self,
        dataset: str,
        *,
        timeout: float | None = 3600,
        on_progress: Callable[[IndexProgress], None] | None = None,
        **fields: Any,
    ) -> DatasetExamples:
        """The dataset images that excite each channel most (examples_request's fields).

        `on_progress` hears each IndexProgress while the server builds the
        dataset's index (the first time a model and layer are asked for).
        """
        request = examples_request(dataset, **fields)
        events = []
        try:
            messages = self.stub.DatasetExamples(request, timeout=timeout, metadata=self.metadata)
            for event, message in typed_events(request, messages):
                if on_progress is not None and isinstance(event, IndexProgress):
                    on_progress(event)
                events.append((event, message))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return collected(events)


NOT_FIELDS = ("self", "timeout")  # visualize's arguments that are not the request's


class AsyncClient(_ClientBase[AsyncVisualization]):
    """The asyncio twin of Client (grpc.aio)."""

    _grpc = grpc.aio
    _stream = AsyncVisualization

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def server_info(self, timeout: float | None = 30) -> ServerInfo:
        """The server's models, presets with their defaults, and limits."""
        response = await self._unary(self.stub.ListModels, pb.ListModelsRequest(), timeout)
        return ServerInfo.from_message(response)

    async def list_models(self, timeout: float | None = 30) -> list[ModelInfo]:
        """Every model the server has loaded."""
        return (await self.server_info(timeout)).models

    async def describe(self, model: str = "vgg16", timeout: float | None = 30) -> ModelInfo:
        """One model: weights, device, precision and layers (NotFound if not served)."""
        request = pb.DescribeModelRequest(model=model)
        response = await self._unary(self.stub.DescribeModel, request, timeout)
        return ModelInfo.from_message(response.model)

    async def analyze(
        self, image: ImageInput, *, timeout: float | None = 60, **fields: Any
    ) -> ImageAnalysis:
        """Which channels of a layer `image` excites, with heatmaps (analyze_request's fields)."""
        request = analyze_request(image, **fields)
        response = await self._unary(self.stub.AnalyzeImage, request, timeout)
        return ImageAnalysis.from_message(response)

    async def examples(
        self, dataset: str, *, timeout: float | None = 3600, **fields: Any
    ) -> DatasetExamples:
        """The dataset images that excite each channel most (examples_request's fields)."""
        request = examples_request(dataset, **fields)
        try:
            call = self.stub.DatasetExamples(request, timeout=timeout, metadata=self.metadata)
            messages = [message async for message in call]
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return collected(typed_events(request, messages))

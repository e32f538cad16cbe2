"""Client library of the filtercast service (never imports TensorFlow).

    from filtercast_client.client import Client
    with Client("localhost:50051") as client:
        for event in client.visualize(layer="block5_conv1", filters="0:16"):
            ...

Several addresses are balanced with gRPC's round_robin policy. Message size
limits match the server's (64 MiB, enough for a 412 px 8x8 grid). `tls=`
reaches a TLS (or mTLS) server, `token=` sends a bearer token on every call.
"""

import asyncio
import io
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc

# Largest message either side accepts (the server imports this). A 412 px 8x8
# grid is 3,331 x 3,331 x 3 = 33.3 MB raw and ~20 MB as PNG; 64 MiB leaves room
# for it in either format.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVICE = "filtercast.v1.FilterVisualizerService"
PRESETS = {
    "classic": pb.PRESET_CLASSIC,
    "upscale": pb.PRESET_UPSCALE,
    "keras_io": pb.PRESET_KERAS_IO,
}
PRECISIONS = {
    "auto": pb.PRECISION_AUTO,
    "float32": pb.PRECISION_FLOAT32,
    "bfloat16": pb.PRECISION_BFLOAT16,
}
FORMATS = {"png": pb.IMAGE_FORMAT_PNG, "raw": pb.IMAGE_FORMAT_RAW}


# UNAVAILABLE is retried with exponential backoff, and only until the first
# response arrives: a stream that has started delivering is never repeated.
# gRPC's own retry policy does this for the unary calls; the stream retries in
# this library, because grpcio's sync unary_stream with a retry policy can hang
# past its deadline when the server dies before answering.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
UNARY_METHODS = ("ListModels", "DescribeModel")


def service_config(balanced: bool, attempts: int) -> str:
    """Retries for the unary methods (when attempts > 1), round_robin across several servers."""
    config: dict[str, Any] = {}
    if attempts > 1:
        names = [{"service": SERVICE, "method": method} for method in UNARY_METHODS]
        policy = {**RETRY_POLICY, "maxAttempts": attempts}
        config["methodConfig"] = [{"name": names, "retryPolicy": policy}]
    if balanced:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (0-based) of a stream, as RETRY_POLICY spaces them."""
    initial = float(RETRY_POLICY["initialBackoff"].rstrip("s"))
    ceiling = float(RETRY_POLICY["maxBackoff"].rstrip("s"))
    delay = min(ceiling, initial * RETRY_POLICY["backoffMultiplier"] ** attempt)
    return random.uniform(0.5, 1.0) * delay  # jitter: replicas are not hit in lockstep


@dataclass(frozen=True)
class TLS:
    """How to reach a TLS server: the roots to trust and, for mTLS, this client's key pair."""

    ca: bytes | None = None  # PEM roots; None: the system's
    cert: bytes | None = None  # PEM certificate chain of this client (mTLS)
    key: bytes | None = None
    server_name: str | None = None  # name to check in the server's certificate, if not the host

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        server_name: str | None = None,
    ) -> "TLS":
        """TLS settings from PEM files (any may be None)."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        if (cert is None) != (key is None):
            raise ValueError("a client certificate and its key go together")
        return cls(read(ca), read(cert), read(key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials for grpc.secure_channel."""
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


def channel_options(balanced: bool, attempts: int = 5, tls: TLS | None = None) -> list:
    """Channel options: message limits, keepalive, retries, balancing, TLS name."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", int(attempts > 1)),
        ("grpc.service_config", service_config(balanced, attempts)),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def retry_after(error: grpc.RpcError) -> float | None:
    """The server's retry hint (google.rpc.RetryInfo) on a refused call, in seconds."""
    # Sync errors are grpc.Call, asyncio ones (AioRpcError) only look like one.
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def target_of(addresses: str | Sequence[str]) -> str:
    """One address as is; several as an ipv4:/ipv6: list gRPC balances over."""
    if isinstance(addresses, str):
        return addresses
    if len(addresses) == 1:
        return addresses[0]
    scheme = "ipv6" if any(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


def enum_name(enum: Any, value: int) -> str:
    """A wire enum value by its short name: PRECISION_BFLOAT16 -> bfloat16."""
    prefix = enum.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")  # e.g. "PRECISION_"
    return enum.Name(value).removeprefix(prefix).lower()


def decode_image(image: pb.Image) -> np.ndarray:
    """A wire Image as uint8 (H, W, 3)."""
    if image.format == pb.IMAGE_FORMAT_RAW:
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))


@dataclass(frozen=True)
class Accepted:
    """The server took the request: its id, every resolved value, the filters."""

    request_id: str
    params: dict[str, Any]
    filters: list[int]

    @property
    def seed(self) -> int:
        """The seed that reproduces this request."""
        return int(self.params["seed"])

    def header(self) -> dict[str, Any]:
        """The manifest's header, as `filtercast render` writes it."""
        p = self.params
        return {
            "model": p["model"],
            "layer": p["layer"],
            "preset": p["preset"],
            "precision": p["precision"],
            "seed": self.seed,
            "params": p,
            "requested": self.filters,
        }


@dataclass(frozen=True)
class FilterImage:
    """One finished filter."""

    index: int
    loss: float
    dead: bool
    image: np.ndarray | None
    steps: int
    seconds: float
    done: int
    total: int

    @property
    def pil(self) -> Image.Image | None:
        """The picture as a PIL image."""
        return None if self.image is None else Image.fromarray(self.image)


@dataclass(frozen=True)
class GridImage:
    """The best filters stitched together."""

    image: np.ndarray
    n: int
    margin: int
    order: list[int]


@dataclass(frozen=True)
class Summary:
    """The request's totals."""

    kept: int
    dead: int
    total_seconds: float
    mean_filter_seconds: float


Event = Accepted | FilterImage | GridImage | Summary


def to_event(response: pb.VisualizeFiltersResponse) -> Event:
    """The typed form of one streamed response."""
    which = response.WhichOneof("event")
    if which == "accepted":
        a = response.accepted
        params = MessageToDict(
            a.params, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        params.update(
            preset=enum_name(pb.Preset, a.params.preset),
            precision=enum_name(pb.Precision, a.params.precision),
            image_format=enum_name(pb.ImageFormat, a.params.image_format),
            seed=a.params.seed,
            dead_threshold=params.get("dead_threshold"),
        )
        return Accepted(a.request_id, params, list(a.filters))
    if which == "filter":
        f = response.filter
        image = decode_image(f.image) if f.HasField("image") else None
        return FilterImage(f.index, f.loss, f.dead, image, f.steps, f.seconds, f.done, f.total)
    if which == "grid":
        g = response.grid
        return GridImage(decode_image(g.image), g.n, g.margin, list(g.order))
    s = response.summary
    return Summary(s.kept, s.dead, s.total_seconds, s.mean_filter_seconds)


def expand_filters(spec: str) -> list[int]:
    """Expand "0:4,9" to [0, 1, 2, 3, 9]; every range needs both bounds here."""
    indices: list[int] = []
    for part in spec.split(","):
        start, colon, stop = part.strip().partition(":")
        indices.extend(range(int(start), int(stop)) if colon else [int(start)])
    return indices


def build_request(
    *,
    model: str = "",
    layer: str = "",
    filters: str | Sequence[int] | None = None,
    preset: str = "classic",
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    precision: str = "auto",
    image_format: str = "png",
    grid: bool = True,
    grid_n: int | None = None,
    grid_margin: int | None = None,
    keep_dead_filters: bool = False,
) -> pb.VisualizeFiltersRequest:
    """A VisualizeFiltersRequest; `filters` is "A:B" or a list of indices."""
    request = pb.VisualizeFiltersRequest(
        model=model,
        layer=layer,
        preset=PRESETS[preset],
        precision=PRECISIONS[precision],
        image_format=FORMATS[image_format],
        keep_dead_filters=keep_dead_filters,
    )
    if isinstance(filters, str) and filters.count(":") == 1 and "," not in filters:
        start, _, stop = filters.partition(":")
        request.filters.range.start = int(start or 0)
        request.filters.range.stop = int(stop or 0)
    elif isinstance(filters, str):
        request.filters.list.indices.extend(expand_filters(filters))
    elif filters is not None:
        request.filters.list.indices.extend(filters)
    for name, value in (overrides or {}).items():
        setattr(request.overrides, name, value)
    if seed is not None:
        request.seed = seed
    request.grid.disabled = not grid
    if grid_n is not None:
        request.grid.n = grid_n
    if grid_margin is not None:
        request.grid.margin = grid_margin
    return request


class _Stream:
    """Retry bookkeeping shared by the sync and async streams."""

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
        if self._cancelled:
            self._call.cancel()
        return self._call

    def _retry_delay(self, error: grpc.RpcError, attempt: int, started: bool) -> float | None:
        """Seconds to wait before trying again, or None to give up with `error`."""
        if started or self._cancelled or error.code() != grpc.StatusCode.UNAVAILABLE:
            return None
        if attempt + 1 >= self._attempts:
            return None
        delay = backoff(attempt)
        remaining = self._remaining()
        return None if remaining is not None and remaining <= delay else delay

    def cancel(self) -> None:
        """Stop the stream; the server drops the filters not yet computed."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()


class Visualization(_Stream):
    """The events of one VisualizeFilters stream; iterate it, or cancel it."""

    def __iter__(self) -> Iterator[Event]:
        for attempt in range(self._attempts):
            started = False
            try:
                for response in self._begin():
                    started = True
                    yield to_event(response)
                return
            except grpc.RpcError as error:
                delay = self._retry_delay(error, attempt, started)
                if delay is None:
                    raise
                time.sleep(delay)


class AsyncVisualization(_Stream):
    """The events of one VisualizeFilters stream, for asyncio."""

    async def __aiter__(self) -> AsyncIterator[Event]:
        for attempt in range(self._attempts):
            started = False
            try:
                async for response in self._begin():
                    started = True
                    yield to_event(response)
                return
            except grpc.RpcError as error:
                delay = self._retry_delay(error, attempt, started)
                if delay is None:
                    raise
                await asyncio.sleep(delay)


class _ClientBase:
    """What Client and AsyncClient share: channel, credentials, token, starting a stream.

    `tls` reaches a TLS server (None: plaintext), `token` is sent as a bearer
    token, `attempts` bounds the tries of a call that finds no server
    (UNAVAILABLE; 1: no retry).
    """

    _grpc: Any  # grpc or grpc.aio
    _stream: type[_Stream]

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        tls: TLS | None = None,
        token: str | None = None,
        attempts: int = RETRY_POLICY["maxAttempts"],
    ) -> None:
        balanced = not isinstance(addresses, str) and len(addresses) > 1
        options = channel_options(balanced, attempts, tls)
        target = target_of(addresses)
        if tls is None:
            self.channel = self._grpc.insecure_channel(target, options)
        else:
            self.channel = self._grpc.secure_channel(target, tls.credentials(), options)
        self.stub = pb_grpc.FilterVisualizerServiceStub(self.channel)
        self.attempts = attempts
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def visualize(self, *, timeout: float | None = None, **request: Any) -> Any:
        """Start a VisualizeFilters stream; keywords as in build_request."""
        message = build_request(**request)
        return self._stream(
            lambda remaining: self.stub.VisualizeFilters(
                message, timeout=remaining, metadata=self.metadata
            ),
            timeout,
            self.attempts,
        )


class Client(_ClientBase):
    """A connection to one filtercast server, or several balanced round-robin."""

    _grpc = grpc
    _stream = Visualization

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def list_models(self, timeout: float | None = 30) -> list[pb.ModelInfo]:
        """Every model the server has loaded."""
        response = self.stub.ListModels(
            pb.ListModelsRequest(), timeout=timeout, metadata=self.metadata
        )
        return list(response.models)

    def describe(self, model: str = "vgg16", timeout: float | None = 30) -> pb.ModelInfo:
        """One model: weights, device, precision and layers."""
        return self.stub.DescribeModel(
            pb.DescribeModelRequest(model=model),
            timeout=timeout,
            metadata=self.metadata,
        ).model


class AsyncClient(_ClientBase):
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

    async def list_models(self, timeout: float | None = 30) -> list[pb.ModelInfo]:
        """Every model the server has loaded."""
        response = await self.stub.ListModels(
            pb.ListModelsRequest(), timeout=timeout, metadata=self.metadata
        )
        return list(response.models)

    async def describe(self, model: str = "vgg16", timeout: float | None = 30) -> pb.ModelInfo:
        """One model: weights, device, precision and layers."""
        response = await self.stub.DescribeModel(
            pb.DescribeModelRequest(model=model),
            timeout=timeout,
            metadata=self.metadata,
        )
        return response.model

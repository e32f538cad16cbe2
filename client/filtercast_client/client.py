"""Client library of the filtercast service (never imports TensorFlow).

    from filtercast_client.client import Client
    with Client("localhost:50051") as client:
        for event in client.visualize(layer="block5_conv1", filters="0:16"):
            ...

Several addresses are balanced with gRPC's round_robin policy. Message size
limits match the server's (64 MiB, enough for a 412 px 8x8 grid).
"""

import io
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
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


# gRPC retries a call only until the first response arrives, so retrying
# UNAVAILABLE is safe for the stream too: it never repeats delivered filters.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(balanced: bool) -> str:
    """Retry policy for every method, and round_robin across several servers."""
    config: dict[str, Any] = {
        "methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": RETRY_POLICY}]
    }
    if balanced:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def channel_options(balanced: bool) -> list[tuple[str, Any]]:
    """Channel options: message limits, keepalive, retries, balancing."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(balanced)),
    ]


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


class Visualization:
    """The events of one VisualizeFilters stream; iterate it, or cancel it."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Event]:
        for response in self._call:
            yield to_event(response)

    def cancel(self) -> None:
        """Stop the stream; the server drops the filters not yet computed."""
        self._call.cancel()


class Client:
    """A connection to one filtercast server, or several balanced round-robin."""

    def __init__(self, addresses: str | Sequence[str]) -> None:
        balanced = not isinstance(addresses, str) and len(addresses) > 1
        self.channel = grpc.insecure_channel(target_of(addresses), channel_options(balanced))
        self.stub = pb_grpc.FilterVisualizerServiceStub(self.channel)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def list_models(self, timeout: float | None = 30) -> list[pb.ModelInfo]:
        """Every model the server has loaded."""
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout).models)

    def describe(self, model: str = "vgg16", timeout: float | None = 30) -> pb.ModelInfo:
        """One model: weights, device, precision and layers."""
        return self.stub.DescribeModel(pb.DescribeModelRequest(model=model), timeout=timeout).model

    def visualize(self, *, timeout: float | None = None, **request: Any) -> Visualization:
        """Start a VisualizeFilters stream; keywords as in build_request."""
        return Visualization(self.stub.VisualizeFilters(build_request(**request), timeout=timeout))


class AsyncVisualization:
    """The events of one VisualizeFilters stream, for asyncio."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def __aiter__(self) -> AsyncIterator[Event]:
        async for response in self._call:
            yield to_event(response)

    def cancel(self) -> None:
        """Stop the stream; the server drops the filters not yet computed."""
        self._call.cancel()


class AsyncClient:
    """The asyncio twin of Client (grpc.aio)."""

    def __init__(self, addresses: str | Sequence[str]) -> None:
        balanced = not isinstance(addresses, str) and len(addresses) > 1
        self.channel = grpc.aio.insecure_channel(target_of(addresses), channel_options(balanced))
        self.stub = pb_grpc.FilterVisualizerServiceStub(self.channel)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def list_models(self, timeout: float | None = 30) -> list[pb.ModelInfo]:
        """Every model the server has loaded."""
        return list((await self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout)).models)

    async def describe(self, model: str = "vgg16", timeout: float | None = 30) -> pb.ModelInfo:
        """One model: weights, device, precision and layers."""
        response = await self.stub.DescribeModel(
            pb.DescribeModelRequest(model=model), timeout=timeout
        )
        return response.model

    def visualize(self, *, timeout: float | None = None, **request: Any) -> AsyncVisualization:
        """Start a VisualizeFilters stream; keywords as in build_request."""
        return AsyncVisualization(
            self.stub.VisualizeFilters(build_request(**request), timeout=timeout)
        )

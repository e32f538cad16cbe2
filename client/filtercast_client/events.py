"""Typed results of the service: stream events, models, presets and limits.

Every response is turned into a frozen dataclass, and a stream's events are
checked against the contract as they arrive (EventChecker): a server that
sends a filter it was not asked for, repeats one, or sends an event the
client does not know fails the stream with ProtocolError instead of
producing a wrong result.
"""

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict
from PIL import Image, UnidentifiedImageError

from filtercast import contract
from filtercast.grid import GridImage as GridImage  # re-exported: the typed grid event
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.errors import ProtocolError


def _params_dict(message: pb.ResolvedParams) -> dict[str, Any]:
    """ResolvedParams as a dict with short enum names ("classic", "bfloat16", "png")."""
    params = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    params.update(
        preset=contract.name_of(contract.PRESETS, message.preset, contract.PRESET_DEFAULT),
        precision=contract.name_of(
            contract.PRECISIONS, message.precision, contract.PRECISION_DEFAULT
        ),
        image_format=contract.name_of(
            contract.IMAGE_FORMATS, message.image_format, contract.IMAGE_FORMAT_DEFAULT
        ),
        seed=message.seed,
        dead_threshold=params.get("dead_threshold"),
    )
    if not message.start_image_sha256:  # no start image: nothing of accentuation to say
        for name in ("start_image_sha256", "pull", "pull_space"):
            del params[name]
    return params


def decode_image(image: pb.Image) -> np.ndarray:
    """A wire Image as uint8 (H, W, C), C = 3 or 1; ProtocolError when it is not what it says."""
    if not 0 < image.width <= 1 << 16 or not 0 < image.height <= 1 << 16:
        raise ProtocolError(f"an image of {image.width}x{image.height} pixels")
    channels = image.channels or 3
    if channels not in (1, 3):
        raise ProtocolError(f"an image of {channels} channels")
    if image.format == pb.IMAGE_FORMAT_RAW:
        expected = image.width * image.height * channels
        if len(image.data) != expected:
            raise ProtocolError(f"a raw image of {len(image.data)} bytes, expected {expected}")
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, channels)
    try:
        opened = Image.open(io.BytesIO(image.data))
        if opened.size != (image.width, image.height):  # checked before any pixel is decoded
            raise ProtocolError(
                f"a PNG of {opened.width}x{opened.height} pixels labelled "
                f"{image.width}x{image.height}"
            )
        converted = opened.convert("L" if channels == 1 else "RGB")
        return np.asarray(converted).reshape(image.height, image.width, channels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        raise ProtocolError(f"an undecodable PNG image: {error}") from error


@dataclass(frozen=True)
class Accepted:
    """The server took the request: its id, every resolved value, the filters."""

    request_id: str
    params: dict[str, Any]
    filters: list[int]
    weights_source: str = ""
    weights_sha256: str = ""
    device: str = ""
    cached_filters: list[int] = field(default_factory=list)  # served from the result cache
    # With objectives: what picture i maximizes, in the objective grammar.
    objectives: list[str] = field(default_factory=list)

    @property
    def seed(self) -> int:
        """The seed that reproduces this request."""
        return int(self.params["seed"])


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
    revived: int = 0  # restarts from fresh noise before it came alive (revive)
    cached: bool = False  # served from the server's result cache
    image_key: str = ""  # its key there: GET /v1/images/{image_key}.png on the HTTP gateway
    objective: str = ""  # what it maximizes (objectives only; "" for a plain filter)
    target: int = 0  # which of the request's objectives
    member: int = 0  # its place in its diversity group or interpolation
    loss_curve: np.ndarray | None = None  # float32, the objective before each step (not cached)

    @property
    def pil(self) -> Image.Image | None:
        """The picture as a PIL image (mode RGB, or L for a grayscale model)."""
        if self.image is None:
            return None
        return Image.fromarray(self.image[..., 0] if self.image.shape[-1] == 1 else self.image)


@dataclass(frozen=True)
class FilterPreview:
    """A picture in flight (previews are droppable: a slow reader gets fewer)."""

    index: int
    step: int  # steps it has made so far
    loss: float  # the objective before that step
    image: np.ndarray  # uint8 (H, W, C), at most 128 px a side
    target: int = 0
    member: int = 0

    @property
    def pil(self) -> Image.Image:
        """The picture as a PIL image."""
        return Image.fromarray(self.image[..., 0] if self.image.shape[-1] == 1 else self.image)


@dataclass(frozen=True)
class Summary:
    """The request's totals."""

    kept: int
    dead: int
    total_seconds: float
    mean_filter_seconds: float
    revived: int = 0  # filters alive after a restart
    cached: int = 0  # filters served from the result cache


Event = Accepted | FilterImage | FilterPreview | GridImage | Summary


@dataclass
class EventChecker:
    """Turns a stream's responses into events, checking each against the request's contract."""

    accepted: Accepted | None = None
    seen: set[int] = field(default_factory=set)
    live: set[int] = field(default_factory=set)
    cached: set[int] = field(default_factory=set)
    finished: bool = False
    preview_steps: dict[int, int] = field(default_factory=dict)  # index -> its latest step

    def event(self, response: pb.VisualizeFiltersResponse) -> Event:
        """The typed event of one response, or ProtocolError."""
        which = response.WhichOneof("event")
        if self.finished:
            raise ProtocolError(f"a {which or 'blank'} event after the Summary")
        if which != "accepted" and self.accepted is None:
            raise ProtocolError(f"the stream began with a {which or 'blank'} event, not Accepted")
        if which == "accepted":
            return self._accepted(response.accepted)
        if which == "filter":
            return self._filter(response.filter)
        if which == "preview":
            return self._preview(response.preview)
        if which == "grid":
            return self._grid(response.grid)
        if which == "summary":
            return self._summary(response.summary)
        raise ProtocolError("an event this client does not know (newer server?) or none at all")

    def end(self) -> None:
        """The stream ended without an error: it must have ended with its Summary."""
        if not self.finished:
            raise ProtocolError("the stream ended before its Summary")

    def _accepted(self, message: pb.Accepted) -> Accepted:
        if self.accepted is not None:
            raise ProtocolError("a second Accepted event")
        filters = list(message.filters)
        if len(set(filters)) != len(filters) or any(i < 0 for i in filters):
            raise ProtocolError("Accepted lists a filter twice or a negative index")
        cached = list(message.cached_filters)
        if len(set(cached)) != len(cached) or not set(cached) <= set(filters):
            raise ProtocolError("Accepted lists a cached filter twice or one not asked for")
        objectives = list(message.objectives)
        if objectives and len(objectives) != len(filters):
            raise ProtocolError(f"Accepted names {len(objectives)} objectives for {len(filters)}")
        self.accepted = Accepted(
            message.request_id,
            _params_dict(message.params),
            filters,
            message.weights_source,
            message.weights_sha256,
            message.device,
            cached,
            objectives,
        )
        return self.accepted

    def _filter(self, message: pb.FilterResult) -> FilterImage:
        assert self.accepted is not None
        index = message.index
        if index not in self.accepted.filters:
            raise ProtocolError(f"filter {index}, which the request did not ask for")
        if index in self.seen:
            raise ProtocolError(f"filter {index} twice")
        if not message.dead and not message.HasField("image"):
            raise ProtocolError(f"live filter {index} without a picture")
        image = decode_image(message.image) if message.HasField("image") else None
        self.seen.add(index)
        if not message.dead:
            self.live.add(index)
        if message.cached:
            self.cached.add(index)
        return FilterImage(
            index,
            message.loss,
            message.dead,
            image,
            message.steps,
            message.seconds,
            len(self.seen),
            len(self.accepted.filters),
            message.revived,
            message.cached,
            message.image_key,
            self.accepted.objectives[index] if self.accepted.objectives else "",
            message.target,
            message.member,
            np.frombuffer(message.loss_curve, "<f4") if message.loss_curve else None,
        )

    def _preview(self, message: pb.FilterPreview) -> FilterPreview:
        assert self.accepted is not None
        index = message.index
        if index not in self.accepted.filters or index in self.seen:
            raise ProtocolError(f"a preview of filter {index}, not one in flight")
        if message.step <= self.preview_steps.get(index, 0):
            raise ProtocolError(f"a preview of filter {index} at step {message.step}, not later")
        self.preview_steps[index] = message.step
        image = decode_image(message.image)
        return FilterPreview(
            index, message.step, message.loss, image, message.target, message.member
        )

    def _grid(self, message: pb.Grid) -> GridImage:
        order = list(message.order)
        stray = [i for i in order if i not in self.live]
        if stray:
            raise ProtocolError(f"a grid holding filter {stray[0]}, which has no picture")
        if message.n < 1 or len(order) > message.n * message.n:
            raise ProtocolError(f"a {message.n}x{message.n} grid of {len(order)} pictures")
        return GridImage(decode_image(message.image), message.n, message.margin, order)

    def _summary(self, message: pb.Summary) -> Summary:
        assert self.accepted is not None
        if len(self.seen) != len(self.accepted.filters):
            raise ProtocolError(
                f"the Summary came after {len(self.seen)} of {len(self.accepted.filters)} filters"
            )
        if (message.kept, message.dead) != (len(self.live), len(self.seen) - len(self.live)):
            raise ProtocolError(
                f"a Summary of {message.kept} kept and {message.dead} dead filters; the stream "
                f"delivered {len(self.live)} and {len(self.seen) - len(self.live)}"
            )
        if message.cached != len(self.cached):
            raise ProtocolError(
                f"a Summary of {message.cached} cached filters; the stream delivered "
                f"{len(self.cached)}"
            )
        self.finished = True
        return Summary(
            message.kept,
            message.dead,
            message.total_seconds,
            message.mean_filter_seconds,
            message.revived,
            message.cached,
        )


@dataclass(frozen=True)
class LayerInfo:
    """A layer ascent can run on ("outer/inner" inside a nested model)."""

    name: str
    type: str
    channels: int
    output_stride: int
    dtype: str


@dataclass(frozen=True)
class DenseLayerInfo:
    """A layer whose output is (N, units): its units are objectives ("logits:3")."""

    name: str
    type: str
    units: int
    activation: str  # a softmax layer's units are taken before the softmax


@dataclass(frozen=True)
class ModelInfo:
    """A model a server has loaded."""

    name: str
    weights_source: str
    weights_sha256: str
    device: str
    auto_precision: str
    default_layer: str
    layers: list[LayerInfo]
    input_size: int | None  # None: any size within the server's limits
    input_channels: int
    preprocessing: str
    default_preset: str
    display_name: str
    description: str
    kind: str  # "builtin" or "file"
    dense_layers: list[DenseLayerInfo] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # image folders: Client.examples

    @classmethod
    def from_message(cls, message: pb.ModelInfo) -> "ModelInfo":
        """The typed form of a wire ModelInfo."""
        return cls(
            message.name,
            message.weights_source,
            message.weights_sha256,
            message.device,
            contract.name_of(contract.PRECISIONS, message.auto_precision, "auto") or "unknown",
            message.default_layer,
            [
                LayerInfo(i.name, i.type, i.channels, i.output_stride, i.dtype)
                for i in message.layers
            ],
            message.input_size or None,
            message.input_channels or 3,
            message.preprocessing,
            contract.name_of(contract.PRESETS, message.default_preset, "classic") or "unknown",
            message.display_name,
            message.description,
            message.kind,
            [DenseLayerInfo(d.name, d.type, d.units, d.activation) for d in message.dense_layers],
            [d.name for d in message.datasets],
        )


@dataclass(frozen=True)
class PresetInfo:
    """A preset and its defaults."""

    name: str
    defaults: dict[str, Any]
    default_filters: int | None  # None: every filter of the layer


@dataclass(frozen=True)
class ServerInfo:
    """What a server offers: models, presets with their defaults, and its limits."""

    models: list[ModelInfo]
    presets: dict[str, PresetInfo]
    limits: dict[str, int | float]  # the fields of the wire's ServerLimits

    @classmethod
    def from_message(cls, message: pb.ListModelsResponse) -> "ServerInfo":
        """The typed form of a ListModelsResponse."""
        presets = {}
        for preset in message.presets:
            defaults = _params_dict(preset.defaults)
            for unset in ("seed", "precision", "image_format", "grid_disabled"):
                defaults.pop(unset, None)
            presets[preset.name] = PresetInfo(preset.name, defaults, preset.default_filters or None)
        limits = {f.name: getattr(message.limits, f.name) for f in message.limits.DESCRIPTOR.fields}
        models = [ModelInfo.from_message(m) for m in message.models]
        return cls(models, presets, limits)

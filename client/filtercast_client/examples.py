"""DatasetExamples on the client: the request, and the stream as typed, checked events.

The stream is IndexProgress while the dataset's index builds, one
ChannelExamples per requested channel in the request's order, then the
ExamplesSummary; anything else is a ProtocolError.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from filtercast.contract import parse_filter_spec, selection_message
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.errors import ProtocolError
from filtercast_client.events import decode_image

STATES = {
    pb.INDEX_STATE_QUEUED: "queued",
    pb.INDEX_STATE_BUILDING: "building",
    pb.INDEX_STATE_READY: "ready",
}


def examples_request(
    dataset: str,
    model: str = "",
    layer: str = "",
    filters: str | Iterable[int] | None = None,
    top_k: int | None = None,
) -> pb.DatasetExamplesRequest:
    """The DatasetExamples request (filters: a spec like "0:16,40" or indices; None: 0..15)."""
    request = pb.DatasetExamplesRequest(dataset=dataset, model=model, layer=layer)
    if isinstance(filters, str):
        request.filters.CopyFrom(selection_message(parse_filter_spec(filters)))
    elif filters is not None:
        request.filters.list.indices.extend(int(i) for i in filters)
    if top_k is not None:
        request.top_k = top_k
    return request


@dataclass(frozen=True)
class IndexProgress:
    """Where the dataset's index stands."""

    state: str  # queued, building, ready
    done: int
    total: int
    skipped: int


@dataclass(frozen=True)
class DatasetExample:
    """One image of the dataset for one channel."""

    image: str  # its path in the dataset folder
    sha256: str
    value: float  # the channel's maximum over positions on it
    position: tuple[int, int]  # (y, x) of that maximum in the layer's map
    box: tuple[int, int, int, int]  # (top, left, height, width) in the seen image
    crop: np.ndarray  # uint8 (height, width, C): the seen image inside `box`


@dataclass(frozen=True)
class ChannelExamples:
    """One channel's best images, best first."""

    channel: int
    examples: list[DatasetExample]


@dataclass
class DatasetExamples:
    """A whole DatasetExamples answer: every channel's examples, the summary, the progress seen."""

    channels: list[ChannelExamples] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # ExamplesSummary in JSON mapping
    progress: list[IndexProgress] = field(default_factory=list)
    messages: list[pb.DatasetExamplesResponse] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        """Every event in the proto's JSON mapping (crops as base64 PNG)."""
        return [MessageToDict(m) for m in self.messages]


Event = IndexProgress | ChannelExamples | dict[str, Any]


def typed_events(
    request: pb.DatasetExamplesRequest, messages: Iterable[pb.DatasetExamplesResponse]
) -> Iterator[tuple[Event, pb.DatasetExamplesResponse]]:
    """Each message as its typed event, checked against the request (ProtocolError)."""
    answered: set[int] = set()
    ended = False
    for message in messages:
        if ended:
            raise ProtocolError("an event after the summary")
        which = message.WhichOneof("event")
        if which == "progress":
            if answered:
                raise ProtocolError("progress after the first channel")
            p = message.progress
            event: Event = IndexProgress(
                STATES.get(p.state, "unknown"), p.images_done, p.images_total, p.skipped
            )
        elif which == "channel":
            if message.channel.channel in answered:
                raise ProtocolError(f"channel {message.channel.channel} answered twice")
            event = _channel(message.channel, request.top_k if request.HasField("top_k") else 8)
            answered.add(message.channel.channel)
        elif which == "summary":
            ended = True
            event = MessageToDict(message.summary)
        else:
            raise ProtocolError(f"an unknown event {which!r}")
        yield event, message
    if not ended:
        raise ProtocolError("the stream ended without a summary")


def _channel(message: pb.ChannelExamples, top_k: int) -> ChannelExamples:
    if len(message.examples) > top_k:
        raise ProtocolError(f"{len(message.examples)} examples of channel {message.channel}")
    examples = []
    for e in message.examples:
        crop = decode_image(e.crop)
        if crop.shape[:2] != (e.box.height, e.box.width):
            raise ProtocolError(f"a crop of {crop.shape[:2]} for a box {e.box}")
        examples.append(
            DatasetExample(
                e.image,
                e.image_sha256,
                e.value,
                (e.position.y, e.position.x),
                (e.box.top, e.box.left, e.box.height, e.box.width),
                crop,
            )
        )
    return ChannelExamples(message.channel, examples)


def collected(events: Iterable[tuple[Event, pb.DatasetExamplesResponse]]) -> DatasetExamples:
    """The typed events gathered into one answer."""
    result = DatasetExamples()
    for event, message in events:
        result.messages.append(message)
        if isinstance(event, IndexProgress):
            result.progress.append(event)
        elif isinstance(event, ChannelExamples):
            result.channels.append(event)
        else:
            result.summary = event
    return result

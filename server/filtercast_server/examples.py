"""Dataset examples: the images of a folder that excite each channel of a layer most.

As OpenAI Microscope ranks them: by the channel's maximum over the map's
positions, with the position of that maximum and the receptive field around
it. The index keeps the best `INDEX_DEPTH` images per channel for one
(model, layer, folder content); a request reads the top_k of the channels it
names. TF-free: the planning, the running top-k (`TopExamples`), the index
value (`ExampleIndex`) and the crop geometry; the forward passes are the
engine's (engine/analysis.py), the build's scheduling is serving's.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from filtercast_server.analysis import DEFAULT_SIZE
from filtercast_server.datasets import Dataset, DatasetImage
from filtercast_server.errors import InvalidRequestError, UnknownDatasetError, quoted
from filtercast_server.planning import served_model
from filtercast_server.selection import FilterSelection, select_filters

if TYPE_CHECKING:  # it imports TensorFlow; planning only asks it questions
    from filtercast_server.engine.models import LoadedModel

INDEX_DEPTH = 16  # images kept per channel; a request may ask for up to this many
DEFAULT_TOP_K = 8
DEFAULT_CHANNELS = 16  # channels answered when a request names none
MAX_CHANNELS = 512  # per request: each is a message of top_k crops


@dataclass(frozen=True)
class ExamplesPlan:
    """One validated examples request."""

    model: str
    layer: str
    dataset: str
    size: int  # side the images are seen at
    channels: tuple[int, ...]
    top_k: int


@dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels a map position sees: rows offset + y*stride .. + size (columns alike)."""

    size: int
    stride: int
    offset: int  # may be negative: the field of position 0 starts in the padding

    def box(self, y: int, x: int, side: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of position (y, x)'s field, clipped to a side x side image."""
        top, left = self.offset + y * self.stride, self.offset + x * self.stride
        top0, left0 = min(max(0, top), side - 1), min(max(0, left), side - 1)
        bottom, right = min(side, top + self.size), min(side, left + self.size)
        return top0, left0, max(1, bottom - top0), max(1, right - left0)


def index_size(model: "LoadedModel") -> int:
    """The side dataset images are seen at: the model's fixed input, else 224 as analysis."""
    return model.input_size or DEFAULT_SIZE


def plan_examples(
    models: "Mapping[str, LoadedModel]",
    datasets: Mapping[str, Mapping[str, Dataset]],
    model: str,
    layer: str,
    dataset: str,
    filters: FilterSelection,
    top_k: int | None,
) -> ExamplesPlan:
    """The examples a request asks for, or InvalidRequestError naming the field to change."""
    name = model or next(iter(models))
    loaded = served_model(models, name)
    layer = layer or loaded.default_layer
    info = loaded.layer(layer)  # InvalidRequestError listing the valid ones
    own = datasets.get(name, {})
    if dataset not in own:
        listed = ", ".join(sorted(own)) or "none (the operator registers them with --dataset)"
        raise UnknownDatasetError(
            f"dataset {quoted(dataset)} is not registered for {name}; its datasets: {listed}",
            dataset,
        )
    size = index_size(loaded)
    if size < loaded.smallest_input(layer):
        raise InvalidRequestError(
            f"{layer} of {name} needs images of at least {loaded.smallest_input(layer)} px; "
            f"dataset images are seen at {size}",
            "layer",
        )
    channels = select_filters(filters, info.channels, DEFAULT_CHANNELS, MAX_CHANNELS)
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if not 1 <= top_k <= INDEX_DEPTH:
        raise InvalidRequestError(f"top_k={top_k} is out of range: 1..{INDEX_DEPTH}", "top_k")
    return ExamplesPlan(name, layer, dataset, size, tuple(channels), top_k)


class TopExamples:
    """The best `depth` images per channel over the batches seen so far.

    Higher maximum first; among equal values the earlier image (in the
    folder's path order), so the ranking is the brute-force one exactly.
    An image whose maximum is NaN (or -inf) is not an example of the channel.
    """

    def __init__(self, channels: int, depth: int = INDEX_DEPTH) -> None:
        self.depth = depth
        self.values = np.full((channels, depth), -np.inf, np.float32)
        self.images = np.full((channels, depth), -1, np.int32)
        self.positions = np.zeros((channels, depth), np.int32)  # flat index in the map

    def add(self, images: Sequence[int], values: np.ndarray, positions: np.ndarray) -> None:
        """Merge a batch: its image numbers (ascending, above all seen), (B, C) maxima, argmaxes."""
        channels = self.values.shape[0]
        ids = np.broadcast_to(np.asarray(images, np.int32), (channels, len(images)))
        merged_values = np.concatenate([self.values, values.T.astype(np.float32)], axis=1)
        merged_values = np.where(np.isnan(merged_values), -np.inf, merged_values)
        merged_ids = np.concatenate([self.images, ids], axis=1)
        merged_positions = np.concatenate([self.positions, positions.T.astype(np.int32)], axis=1)
        # Kept entries come first and are in rank order; a stable sort keeps earlier images
        # first among equals.
        order = np.argsort(-merged_values, axis=1, kind="stable")[:, : self.depth]
        self.values = np.take_along_axis(merged_values, order, axis=1)
        self.images = np.take_along_axis(merged_ids, order, axis=1)
        self.positions = np.take_along_axis(merged_positions, order, axis=1)


@dataclass(frozen=True)
class ExampleIndex:
    """A built index: per channel its best images, their maxima and where they are."""

    images: tuple[DatasetImage, ...]  # the images it refers to (only those)
    values: np.ndarray  # float32 (C, depth); -inf where fewer images than depth
    image_ids: np.ndarray  # int32 (C, depth) into `images`; -1: none
    positions: np.ndarray  # int32 (C, depth): flat index into the (map_height, map_width) map
    map_shape: tuple[int, int]
    size: int
    field: ReceptiveField
    indexed: int  # images that decoded and were ranked
    skipped: Mapping[str, int]  # reason -> count, the listing's and the decoder's
    content_sha256: str
    seconds: float  # the build's wall time

    @classmethod
    def of(
        cls,
        top: TopExamples,
        listing: Sequence[DatasetImage],
        map_shape: tuple[int, int],
        size: int,
        field: ReceptiveField,
        indexed: int,
        skipped: Mapping[str, int],
        content_sha256: str,
        seconds: float,
    ) -> "ExampleIndex":
        """The index of a finished build, its image numbers renumbered to those it uses."""
        used = sorted({int(i) for i in top.images.ravel() if i >= 0})
        renumber = np.full(len(listing) + 1, -1, np.int32)  # [-1] stays -1
        renumber[used] = np.arange(len(used), dtype=np.int32)
        return cls(
            tuple(listing[i] for i in used),
            top.values,
            renumber[top.images],
            top.positions,
            map_shape,
            size,
            field,
            indexed,
            dict(skipped),
            content_sha256,
            seconds,
        )

    def examples(self, channel: int, top_k: int) -> list[tuple[DatasetImage, float, int, int]]:
        """(image, value, y, x) of the channel's best `top_k` images, best first."""
        width = self.map_shape[1]
        found = []
        for slot in range(min(top_k, self.image_ids.shape[1])):
            image = int(self.image_ids[channel, slot])
            if image < 0:
                break
            position = int(self.positions[channel, slot])
            found.append(
                (
                    self.images[image],
                    float(self.values[channel, slot]),
                    position // width,
                    position % width,
                )
            )
        return found


@dataclass(frozen=True)
class Crop:
    """One example of a channel: the image, its maximum, where, and the seen image around it."""

    image: DatasetImage
    value: float
    position: tuple[int, int]  # (y, x) in the layer's map
    box: tuple[int, int, int, int]  # (top, left, height, width) in the seen image
    pixels: np.ndarray  # uint8 (height, width, C): the seen image inside `box`


def crops_of(
    index: ExampleIndex, channel: int, top_k: int, seen: Callable[[DatasetImage], np.ndarray]
) -> list[Crop]:
    """The channel's best `top_k` examples, each cropped from `seen(image)` (S x S x C)."""
    found = []
    for image, value, y, x in index.examples(channel, top_k):
        top, left, height, width = index.field.box(y, x, index.size)
        pixels = np.ascontiguousarray(seen(image)[top : top + height, left : left + width])
        found.append(Crop(image, value, (y, x), (top, left, height, width), pixels))
    return found

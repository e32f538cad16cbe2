"""What an image analysis asks for, checked against a model, and what its maps say.

TF-free: `plan_analysis` validates a request against a loaded model's
description (INVALID_ARGUMENT with the field's name), `rank_channels`
turns the layer's (h, w, C) maps into the ranked channels, and `heatmap`
colours one map at the seen image's size. The forward pass itself is the
engine's (engine/analysis.py).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from filtercast_server.errors import InvalidRequestError
from filtercast_server.params import Limits
from filtercast_server.planning import served_model

if TYPE_CHECKING:  # it imports TensorFlow; planning only asks it questions
    from filtercast_server.engine.models import LoadedModel

DEFAULT_SIZE = 224  # the size these networks were trained at
DEFAULT_TOP_K = 8
MAX_CHANNELS = 64  # ranked plus named: each is one heatmap PNG in the response
# The heatmap's colours from 0 to the channel's maximum: dark blue, blue,
# magenta, orange, yellow (monotonic in lightness, so it reads in grayscale too).
ANCHORS = np.array(
    [(20, 18, 60), (50, 60, 170), (170, 60, 140), (240, 130, 50), (250, 230, 80)], np.float64
)
COLOURS = (
    np.stack(
        [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(ANCHORS)), a) for a in ANCHORS.T],
        axis=1,
    )
    .round()
    .astype(np.uint8)
)


@dataclass(frozen=True)
class AnalysisPlan:
    """One validated analysis: which model and layer, at what size, which channels."""

    model: str
    layer: str
    size: int
    top_k: int
    channels: tuple[int, ...]  # named by the request, in its order
    raw_maps: bool


@dataclass(frozen=True)
class ChannelStats:
    """One channel of the layer on the image."""

    channel: int
    mean: float
    share: float  # of the layer's total mean activation
    max: float
    peak: tuple[int, int]  # (y, x) of the maximum in the map


def plan_analysis(
    models: "Mapping[str, LoadedModel]",
    model: str,
    layer: str,
    size: int | None,
    top_k: int | None,
    channels: list[int],
    raw_maps: bool,
    limits: Limits,
) -> AnalysisPlan:
    """The analysis a request asks for, or InvalidRequestError naming the field to change."""
    name = model or next(iter(models))
    loaded = served_model(models, name)
    layer = layer or loaded.default_layer
    info = loaded.layer(layer)  # InvalidRequestError listing the valid ones
    size = DEFAULT_SIZE if size is None and not loaded.input_size else size or loaded.input_size
    assert size is not None
    if loaded.input_size and size != loaded.input_size:
        raise InvalidRequestError(
            f"size={size}: {name} takes only {loaded.input_size} px images", "size"
        )
    smallest = max(limits.min_size, loaded.smallest_input(layer))
    if not smallest <= size <= limits.max_size:
        raise InvalidRequestError(
            f"size={size} is out of range: {layer} of {name} needs {smallest}..{limits.max_size}",
            "size",
        )
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if not 0 <= top_k <= min(MAX_CHANNELS, info.channels):
        raise InvalidRequestError(
            f"top_k={top_k} is out of range: 0..{min(MAX_CHANNELS, info.channels)}", "top_k"
        )
    bad = [c for c in channels if not 0 <= c < info.channels]
    if bad:
        raise InvalidRequestError(
            f"channel {bad[0]} is out of range: {layer} has {info.channels} channels (0.."
            f"{info.channels - 1})",
            "channels",
        )
    if top_k + len(channels) > MAX_CHANNELS:
        raise InvalidRequestError(
            f"top_k + channels asks for {top_k + len(channels)} maps; at most {MAX_CHANNELS}",
            "channels",
        )
    return AnalysisPlan(name, layer, size, top_k, tuple(channels), raw_maps)


def rank_channels(
    maps: np.ndarray, plan: AnalysisPlan
) -> tuple[float, list[ChannelStats], list[ChannelStats]]:
    """(layer total, the top_k channels highest mean first, the named ones) of (h, w, C) maps."""
    means = maps.astype(np.float64).mean(axis=(0, 1))
    total = float(means.sum())
    flat = maps.reshape(-1, maps.shape[-1])
    peaks = flat.argmax(axis=0)
    width = maps.shape[1]

    def stats(channel: int) -> ChannelStats:
        peak = int(peaks[channel])
        return ChannelStats(
            channel=channel,
            mean=float(means[channel]),
            share=float(means[channel] / total) if total > 0 else 0.0,
            max=float(flat[peak, channel]),
            peak=(peak // width, peak % width),
        )

    # Highest mean first; ties by the lower index, so the ranking is reproducible.
    order = np.lexsort((np.arange(len(means)), -means))[: plan.top_k]
    return total, [stats(int(c)) for c in order], [stats(c) for c in plan.channels]


def heatmap(values: np.ndarray, size: int) -> np.ndarray:
    """uint8 (size, size, 3): one (h, w) map upsampled (bilinear) and coloured 0..its max."""
    grid = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    upsampled = np.asarray(grid.resize((size, size), Image.Resampling.BILINEAR))
    top = float(values.max())
    scaled = np.clip(upsampled / top, 0.0, 1.0) if top > 0 else np.zeros_like(upsampled)
    return COLOURS[np.round(scaled * 255).astype(np.uint8)]

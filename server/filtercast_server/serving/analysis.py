"""AnalyzeImage: a user's image, checked and decoded, one forward pass, its channels and maps.

The image is checked before it is decoded (images.py) and decoded off the
event loop; the forward pass runs on its own thread beside the scheduler's
batches, not queued behind them: it is one pass of one image, and its
latency is the point. Admission bounds how many run or wait at once, in all
and per client (RESOURCE_EXHAUSTED past either), so images cannot pile up
in memory.
"""

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.analysis import (
    AnalysisPlan,
    ChannelStats,
    heatmap,
    plan_analysis,
    rank_channels,
)
from filtercast_server.images import DecodedImage, decode_image, square_view, to_channels
from filtercast_server.params import Limits
from filtercast_server.serving.admission import StreamAdmission
from filtercast_server.serving.wire import encode_image

if TYPE_CHECKING:  # it imports TensorFlow; serving only reads a model's description
    from filtercast_server.engine.models import LoadedModel

# (model, layer, uint8 image) -> float32 (h, w, C) maps: engine.analysis.LayerMaps
MapsOf = Callable[[str, str, np.ndarray], np.ndarray]
MAX_ANALYSES = 8  # running or waiting at once, in all
MAX_CLIENT_ANALYSES = 4  # per client


class Analyses:
    """Answers AnalyzeImage requests on loaded models (see the module docstring)."""

    def __init__(
        self, models: "Mapping[str, LoadedModel]", maps_of: MapsOf, limits: Limits
    ) -> None:
        self.models = models
        self.maps_of = maps_of
        self.limits = limits
        self.admission = StreamAdmission(MAX_ANALYSES, MAX_CLIENT_ANALYSES, what="analyses")
        self._decoder = ThreadPoolExecutor(2, thread_name_prefix="filtercast-decode")
        self._forward = ThreadPoolExecutor(1, thread_name_prefix="filtercast-analyze")

    def plan(self, request: pb.AnalyzeImageRequest) -> AnalysisPlan:
        """The validated analysis (InvalidRequestError naming the field)."""
        return plan_analysis(
            self.models,
            request.model,
            request.layer,
            request.size if request.HasField("size") else None,
            request.top_k if request.HasField("top_k") else None,
            list(request.channels),
            request.raw_maps,
            self.limits,
        )

    async def run(self, plan: AnalysisPlan, image: bytes) -> pb.AnalyzeImageResponse:
        """Decode, look, rank and draw: the response (ImageError for a bad image)."""
        loop = asyncio.get_running_loop()
        channels = self.models[plan.model].channels
        decoded, seen = await loop.run_in_executor(
            self._decoder, _prepared, image, plan.size, channels
        )
        maps = await loop.run_in_executor(self._forward, self.maps_of, plan.model, plan.layer, seen)
        return await loop.run_in_executor(self._decoder, self._response, plan, decoded, seen, maps)

    def _response(
        self, plan: AnalysisPlan, decoded: DecodedImage, seen: np.ndarray, maps: np.ndarray
    ) -> pb.AnalyzeImageResponse:
        total, top, named = rank_channels(maps, plan)
        model = self.models[plan.model]
        return pb.AnalyzeImageResponse(
            model=plan.model,
            layer=plan.layer,
            seen=encode_image(seen, pb.IMAGE_FORMAT_PNG),
            preprocessing=model.training_preprocessing.describe(),
            source_format=decoded.format,
            source_mode=decoded.mode,
            source_width=decoded.width,
            source_height=decoded.height,
            map_height=maps.shape[0],
            map_width=maps.shape[1],
            channel_count=maps.shape[2],
            layer_total=total,
            top=[_channel(s, maps, plan) for s in top],
            named=[_channel(s, maps, plan) for s in named],
        )


def _prepared(data: bytes, size: int, channels: int) -> tuple[DecodedImage, np.ndarray]:
    decoded = decode_image(data, "image", shrink_to=size)
    return decoded, to_channels(square_view(decoded.pixels, size), channels)


def _channel(stats: ChannelStats, maps: np.ndarray, plan: AnalysisPlan) -> pb.ChannelActivation:
    values = maps[..., stats.channel]
    message = pb.ChannelActivation(
        channel=stats.channel,
        mean=stats.mean,
        share=stats.share,
        max=stats.max,
        peak=pb.Position(y=stats.peak[0], x=stats.peak[1]),
        heatmap=encode_image(heatmap(values, plan.size), pb.IMAGE_FORMAT_PNG),
    )
    if plan.raw_maps:
        message.raw_map = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return message

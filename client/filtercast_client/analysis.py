"""AnalyzeImage on the client: the request from a file, bytes or array, the typed answer."""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict
from PIL import Image

from filtercast.contract import MAX_IMAGE_BYTES, ContractError
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.errors import ProtocolError
from filtercast_client.events import decode_image

ImageInput = str | Path | bytes | np.ndarray  # a PNG/JPEG file or its bytes, or uint8 pixels


def image_bytes(image: ImageInput) -> bytes:
    """PNG or JPEG bytes of `image` (an array is sent as PNG); ContractError when too large."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ContractError("an image array is uint8 (H, W), (H, W, 1) or (H, W, 3)", "image")
        pixels = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
    elif isinstance(image, bytes):
        data = image
    else:
        data = Path(image).read_bytes()
    if len(data) > MAX_IMAGE_BYTES:
        raise ContractError(
            f"the image is {len(data)} bytes; a server takes at most {MAX_IMAGE_BYTES}", "image"
        )
    return data


def analyze_request(
    image: ImageInput,
    model: str = "",
    layer: str = "",
    size: int | None = None,
    top_k: int | None = None,
    channels: list[int] | None = None,
    raw_maps: bool = False,
) -> pb.AnalyzeImageRequest:
    """The AnalyzeImage request for `image` (see the proto for every field's meaning)."""
    request = pb.AnalyzeImageRequest(
        model=model, layer=layer, image=image_bytes(image), raw_maps=raw_maps
    )
    if size is not None:
        request.size = size
    if top_k is not None:
        request.top_k = top_k
    request.channels.extend(channels or [])
    return request


@dataclass(frozen=True)
class ChannelMap:
    """One channel of the layer on the image: how much it fired, where, and its heatmap."""

    channel: int
    mean: float
    share: float  # of the layer's total mean activation
    max: float
    peak: tuple[int, int]  # (y, x) in the layer's map
    heatmap: np.ndarray  # uint8 (S, S, 3), aligned with ImageAnalysis.seen
    values: np.ndarray | None  # float32 (h, w) with raw_maps

    @classmethod
    def from_message(cls, m: pb.ChannelActivation, shape: tuple[int, int]) -> "ChannelMap":
        """Checked: a raw map must have the layer's shape."""
        values = None
        if m.raw_map:
            if len(m.raw_map) != 4 * shape[0] * shape[1]:
                raise ProtocolError(f"a raw map of {len(m.raw_map)} bytes for a {shape} layer")
            values = np.frombuffer(m.raw_map, "<f4").reshape(shape)
        return cls(
            m.channel, m.mean, m.share, m.max, (m.peak.y, m.peak.x), decode_image(m.heatmap), values
        )


@dataclass(frozen=True)
class ImageAnalysis:
    """Which channels of a layer an image excites, as the network saw it."""

    model: str
    layer: str
    seen: np.ndarray  # uint8 (S, S, C): the image after resize and crop, before preprocessing
    preprocessing: str  # what the network applied to `seen`
    source: dict[str, Any]  # format, mode, width, height of the file sent
    map_shape: tuple[int, int]
    channel_count: int
    layer_total: float
    top: list[ChannelMap]  # highest mean first
    named: list[ChannelMap]  # the channels asked for, in order
    message: pb.AnalyzeImageResponse  # as received (e.g. for its JSON mapping)

    @classmethod
    def from_message(cls, m: pb.AnalyzeImageResponse) -> "ImageAnalysis":
        """The typed analysis of a response."""
        shape = (m.map_height, m.map_width)
        return cls(
            model=m.model,
            layer=m.layer,
            seen=decode_image(m.seen),
            preprocessing=m.preprocessing,
            source={
                "format": m.source_format,
                "mode": m.source_mode,
                "width": m.source_width,
                "height": m.source_height,
            },
            map_shape=shape,
            channel_count=m.channel_count,
            layer_total=m.layer_total,
            top=[ChannelMap.from_message(c, shape) for c in m.top],
            named=[ChannelMap.from_message(c, shape) for c in m.named],
            message=m,
        )

    def to_json(self) -> dict[str, Any]:
        """The response in the proto's JSON mapping (images as base64 PNG)."""
        return MessageToDict(self.message)

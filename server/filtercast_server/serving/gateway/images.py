"""Bodies that carry an image, read within bounds.

`POST /v1/models/{model}:analyze` takes two shapes, both to one
AnalyzeImageRequest: the request in JSON (the image base64, as the proto3
JSON mapping has it), or the image itself as the body (`Content-Type:
image/png` or `image/jpeg`) with the other fields in the query
(`?layer=block5_conv1&size=224&top_k=8&channels=1,2&raw_maps=true`).
`POST /v1/visualize:accentuate` takes a VisualizeFiltersRequest in JSON whose
`accentuate.image` is the start image, base64.

Bodies this large are bounded three ways before they can fill memory: the
declared size (413 before reading, also before `100 Continue`), the bytes
actually received (a chunked body is cut off at the limit), and how many are
read at once (IMAGE_BODIES; more are 429 with a retry hint at once).
"""

import asyncio
import contextlib
from collections.abc import Iterator

import grpc
from aiohttp import web

from filtercast.contract import MAX_IMAGE_BYTES
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.observability.metrics import Metrics
from filtercast_server.serving.gateway.calls import CallAborted, parsed_json, slow_body
from filtercast_server.serving.status import ErrorFacts, status_trailers

IMAGE_TYPES = ("image/png", "image/jpeg")
# base64 is 4/3 of the bytes; the other fields are small.
MAX_IMAGE_BODY = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024
IMAGE_BODIES = 8  # image bodies read at once, over every connection
BUSY_RETRY_SECONDS = 1
QUERY_FIELDS = ("layer", "size", "top_k", "channels", "raw_maps")


class ImageBodies:
    """Reads analyze bodies, at most IMAGE_BODIES at once."""

    def __init__(self, metrics: Metrics, read_seconds: float) -> None:
        self.metrics = metrics
        self.read_seconds = read_seconds
        self.reading = 0

    def check(self, request: web.Request) -> None:
        """CallAborted for a body of another type (415) or a declared size over the limit (413)."""
        if request.content_type not in ("application/json", *IMAGE_TYPES):
            raise CallAborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                "send an AnalyzeImageRequest as application/json, or the image itself as "
                "image/png or image/jpeg",
                http_status=415,
            )
        self._check_length(request)

    def check_json(self, request: web.Request) -> None:
        """check, for a route that takes JSON only."""
        if request.content_type != "application/json":
            raise CallAborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                "send the VisualizeFiltersRequest as application/json, its accentuate.image base64",
                http_status=415,
            )
        self._check_length(request)

    def _check_length(self, request: web.Request) -> None:
        if (request.content_length or 0) > self._limit(request):
            raise CallAborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this body is at most {self._limit(request)} bytes (images at most "
                f"{MAX_IMAGE_BYTES})",
                http_status=413,
            )

    @staticmethod
    def _limit(request: web.Request) -> int:
        return MAX_IMAGE_BYTES if request.content_type in IMAGE_TYPES else MAX_IMAGE_BODY

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if self.reading >= IMAGE_BODIES:
            self.metrics.rejected.labels("http_image_bodies").inc()
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            message = f"{IMAGE_BODIES} images are being received already; retry in a second"
            facts = ErrorFacts(quota="server/http_image_bodies", retry_after=BUSY_RETRY_SECONDS)
            raise CallAborted(code, message, status_trailers(code, message, facts))
        self.reading += 1
        try:
            yield
        finally:
            self.reading -= 1

    async def request_of(self, request: web.Request) -> pb.AnalyzeImageRequest:
        """The AnalyzeImageRequest the HTTP request carries (CallAborted saying what is wrong)."""
        self.check(request)
        with self._slot():
            data = await self._read(request, self._limit(request))
        if request.content_type in IMAGE_TYPES:
            message = _query_request(request)
            message.image = data
        else:
            message = parsed_json(data, pb.AnalyzeImageRequest(), self.metrics)
        message.model = request.match_info["model"]
        return message

    async def visualize_request_of(self, request: web.Request) -> pb.VisualizeFiltersRequest:
        """The VisualizeFiltersRequest (with its start image) the JSON body carries."""
        self.check_json(request)
        with self._slot():
            data = await self._read(request, MAX_IMAGE_BODY)
        return parsed_json(data, pb.VisualizeFiltersRequest(), self.metrics)

    async def _read(self, request: web.Request, limit: int) -> bytes:
        """The body, at most `limit` bytes, within read_seconds (413, 408)."""
        chunks, received = [], 0
        try:
            async with asyncio.timeout(self.read_seconds):
                while chunk := await request.content.read(256 * 1024):
                    received += len(chunk)
                    if received > limit:
                        raise CallAborted(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"this body is at most {limit} bytes",
                            http_status=413,
                        )
                    chunks.append(chunk)
        except TimeoutError:
            self.metrics.rejected.labels("http_slow_body").inc()
            raise slow_body(self.read_seconds) from None
        return b"".join(chunks)


def _query_request(request: web.Request) -> pb.AnalyzeImageRequest:
    """The fields of an image-bodied request, from its query (INVALID_ARGUMENT naming one)."""
    query = request.query
    unknown = sorted(set(query) - set(QUERY_FIELDS))
    if unknown:
        raise CallAborted(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown query parameter {unknown[0][:40]!r}; known: {', '.join(QUERY_FIELDS)}",
        )
    message = pb.AnalyzeImageRequest(layer=query.get("layer", ""))
    try:
        for name in ("size", "top_k"):
            if name in query:
                setattr(message, name, int(query[name]))
        if query.get("channels"):
            message.channels.extend(int(c) for c in query["channels"].split(","))
    except ValueError as error:  # also ints beyond int32
        raise CallAborted(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"size, top_k and channels are integers (channels comma-separated): {error}",
        ) from error
    raw = query.get("raw_maps", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise CallAborted(grpc.StatusCode.INVALID_ARGUMENT, "raw_maps is true or false")
    message.raw_maps = raw in ("true", "1")
    return message

"""A servicer call over one HTTP exchange: its context, and its errors as HTTP answers.

The servicer's methods take a grpc.aio context; HttpCallContext is what they
use of one (`write` emits a frame, `abort` raises CallAborted), and
CallAborted becomes grpc-gateway's answer: the HTTP status its code maps to
and a google.rpc.Status body with the typed details.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers detail types)

from filtercast_server.serving.status import DETAILS_KEY

if TYPE_CHECKING:
    from filtercast_server.observability.metrics import Metrics

MessageT = TypeVar("MessageT", bound=Message)

# google.rpc.Code -> HTTP status, as grpc-gateway maps them.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# aiohttp's own refusals (before any route runs) -> google.rpc.Code, as grpc-gateway answers.
HTTP_CODES = {
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
}
# The page loads nothing from elsewhere; pictures arrive as data: URLs or from here.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class CallAborted(Exception):  # noqa: N818  (named as grpc's own AbortError is)
    """The servicer ended the call with a status (an HTTP error, or a last error line)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailers: Any = (),
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers or ()
        self.http_status = http_status or HTTP_STATUS[code]

    def status(self) -> dict[str, Any]:
        """google.rpc.Status as JSON: code, message and the typed details."""
        status = status_pb2.Status()
        for key, value in self.trailers:
            if key == DETAILS_KEY:
                status.ParseFromString(value)
        status.code = self.code.value[0]
        status.message = self.message
        return json_format.MessageToDict(status, always_print_fields_with_no_presence=True)

    def retry_after(self) -> float | None:
        """Seconds from the RetryInfo detail, if any."""
        for detail in self.status().get("details", []):
            if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
                return float(detail.get("retryDelay", "0s").rstrip("s"))
        return None


def slow_body(read_seconds: float) -> CallAborted:
    """The error for a request body that did not arrive in time (DEADLINE_EXCEEDED, 408)."""
    return CallAborted(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the request body did not arrive within {read_seconds:.0f} s",
        http_status=408,
    )


def parsed_json(data: bytes, message: MessageT, metrics: "Metrics") -> MessageT:
    """`data` as JSON of `message`'s type, or INVALID_ARGUMENT saying it is not."""
    try:
        return json_format.Parse(data.decode("utf-8") or "{}", message)
    # ValueError: bad UTF-8 or JSON; RecursionError: JSON nested beyond Python's stack.
    except (json_format.ParseError, ValueError, RecursionError) as error:
        metrics.rejected.labels("malformed").inc()
        raise CallAborted(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the body is not a {message.DESCRIPTOR.full_name} in JSON: {str(error)[:300]}",
        ) from error


class HttpCallContext:
    """What the servicer uses of a grpc.aio context, over one HTTP exchange.

    `write` sends a response message through `emit` (the first write starts
    the HTTP response); `abort` raises CallAborted.
    """

    def __init__(self, emit: Callable[[Message], Any] | None = None) -> None:
        self._emit = emit

    async def write(self, message: Message) -> None:
        """Send one streamed message."""
        assert self._emit is not None, "a unary call does not stream"
        await self._emit(message)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        """End the call with a status."""
        raise CallAborted(code, details, trailing_metadata)


def to_json(message: Message) -> dict[str, Any]:
    """A message in the proto3 JSON mapping (lowerCamelCase, enum names, base64 bytes)."""
    return json_format.MessageToDict(message)


def error_response(error: CallAborted, extra: dict[str, str] | None = None) -> web.Response:
    """The error as its HTTP status and a google.rpc.Status body."""
    headers = {**SECURITY_HEADERS, **(extra or {})}
    retry = error.retry_after()
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    if error.code is grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response(error.status(), status=error.http_status, headers=headers)

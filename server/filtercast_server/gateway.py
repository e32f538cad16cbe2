"""The HTTP/JSON gateway and the browser gallery, on the server's own event loop.

aiohttp (already the /metrics server; asyncio-native, maintained, streaming
responses) serves, on `--http-port`:

    GET  /                        the gallery page (gallery/ in this package)
    GET  /gallery/{file}          its script and style sheet
    GET  /v1/models               ListModels
    GET  /v1/models/{model}       DescribeModel
    POST /v1/visualize            VisualizeFilters: the request as JSON, the stream as
                                  NDJSON lines {"result": <response>} (or server-sent
                                  events with Accept: text/event-stream)
    GET  /v1/images/{key}.png     a cached picture (FilterResult.image_key)

Bodies follow the proto3 JSON mapping (lowerCamelCase names, enum names,
base64 bytes) and the stream and error shapes are grpc-gateway's, so a
grpc-gateway put in front later (given this path mapping) would answer
these URLs alike; it would print default values, which this one omits.

It is not a second engine: each call goes to the gRPC servicer's own
methods with a context that turns writes into lines and aborts into HTTP
errors, so validation, admission, queue limits, the scheduler, the cache
and the metrics are the same. A client that disconnects cancels its stream
(handler cancellation). Bearer tokens and TLS are the gRPC port's.

Limits of its own (HttpLimits): connections at once (http_limits), the time
a request's headers and then its body may take to arrive (a client that
sends either slowly is cut off), and a body size checked before reading,
also before answering `Expect: 100-continue`.
"""

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

import grpc
from aiohttp import HttpVersion11, web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers detail types)

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.api import FilterVisualizerServicer
from filtercast_server.auth import AuthError, TokenAuthenticator
from filtercast_server.cache.keys import is_key
from filtercast_server.http_limits import ConnectionLimit
from filtercast_server.interceptor import bind_caller
from filtercast_server.metrics import Metrics
from filtercast_server.status import DETAILS_KEY

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0  # a stream waiting for its filters sends a blank frame this often
MAX_BODY_BYTES = 64 * 1024  # a request is under 2 KiB; 2,048 listed filters under 16 KiB
SHUTDOWN_SECONDS = 1.0  # streams have had the drain already; then the gateway closes
LINGER_SECONDS = 1.0
NEVER_EXPIRES_MAX_AGE = 24 * 3600  # browsers keep a picture whose entry has no TTL a day


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP client may hold: connections in all, time to send a request."""

    max_connections: int = 256
    # A request's headers must arrive within this of the connection opening (or of
    # its last response: aiohttp's keep-alive timer, which also closes idle ones),
    # and its body within this of its headers.
    read_seconds: float = 10.0
    handshake_seconds: float = 10.0  # TLS


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
GALLERY_FILES = {
    "index.html": "text/html",
    "gallery.js": "text/javascript",
    "gallery.css": "text/css",
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


class Gateway:
    """The HTTP routes over one servicer."""

    def __init__(
        self,
        servicer: FilterVisualizerServicer,
        metrics: Metrics,
        authenticator: TokenAuthenticator | None = None,
        *,
        loopback: bool = False,
        limits: HttpLimits = HttpLimits(),
    ) -> None:
        self.servicer = servicer
        self.metrics = metrics
        self.authenticator = authenticator
        self.limits = limits
        # Listening on loopback only: a Host header naming anything else is a web page's
        # DNS-rebinding trick to reach it, and is refused.
        self.loopback = loopback
        package = resources.files("filtercast_server") / "gallery"
        self._files = {name: (package / name).read_bytes() for name in GALLERY_FILES}

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._observe])
        app.router.add_get("/", self.index)
        app.router.add_get("/gallery/{name}", self.gallery_file)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.describe_model)
        app.router.add_post("/v1/visualize", self.visualize, expect_handler=self._expect)
        app.router.add_get("/v1/images/{key}.png", self.image)
        return app

    # --- around every request -----------------------------------------------------------

    @web.middleware
    async def _observe(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """Count the request by route and status; JSON errors for aiohttp's own refusals."""
        started = time.perf_counter()
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        status = 499  # the client left before an answer
        try:
            if self.loopback and not _loopback_name(request.host):
                refusal = CallAborted(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this gateway listens on loopback: address it as 127.0.0.1, [::1] or localhost",
                    http_status=421,
                )
                response = self._error(refusal)
            else:
                response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:  # 404 for an unknown path, 405, 413...
            status = error.status
            code = HTTP_CODES.get(error.status, grpc.StatusCode.UNKNOWN)
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
            return self._error(CallAborted(code, error.reason, http_status=status), allow)
        finally:
            self.metrics.http_requests.labels(name, str(status)).inc()
            self.metrics.http_duration.labels(name).observe(time.perf_counter() - started)

    def _authorize(self, request: web.Request, method: str) -> None:
        """Bind the caller's identity.

        CallAborted without a valid token, or for a role that may not call `method`.
        """
        caller = request.remote or "unknown"
        if self.authenticator is not None:
            try:
                identity = self.authenticator.identify(
                    [("authorization", request.headers.get("Authorization", ""))]
                )
                if not identity.may_call(method):
                    raise AuthError(
                        f"this token's role ({identity.role}) may not call {method}",
                        permission=True,
                    )
            except AuthError as error:
                reason = "permission_denied" if error.permission else "unauthenticated"
                self.metrics.rejected.labels(reason).inc()
                code = (
                    grpc.StatusCode.PERMISSION_DENIED
                    if error.permission
                    else grpc.StatusCode.UNAUTHENTICATED
                )
                raise CallAborted(code, str(error)) from error
            caller = identity.name
        bind_caller(caller)

    @staticmethod
    def _error(error: CallAborted, extra: dict[str, str] | None = None) -> web.Response:
        """The error as its HTTP status and a google.rpc.Status body."""
        headers = {**SECURITY_HEADERS, **(extra or {})}
        retry = error.retry_after()
        if retry is not None:
            headers["Retry-After"] = str(max(1, round(retry)))
        if error.code is grpc.StatusCode.UNAUTHENTICATED:
            headers["WWW-Authenticate"] = "Bearer"
        return web.json_response(error.status(), status=error.http_status, headers=headers)

    async def _unary(
        self, request: web.Request, method: str, call: Callable, body: Message
    ) -> web.Response:
        try:
            self._authorize(request, method)
            response = await call(body.SerializeToString(), HttpCallContext())
        except CallAborted as error:
            return self._error(error)
        return web.json_response(to_json(response), headers=SECURITY_HEADERS)

    # --- routes ---------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        """The gallery page."""
        return await self.gallery_file(request, "index.html")

    async def gallery_file(self, request: web.Request, name: str | None = None) -> web.Response:
        """One of the gallery's files (no others: the names are a fixed list)."""
        name = name or request.match_info["name"]
        if name not in self._files:
            raise web.HTTPNotFound(reason=f"no gallery file {name[:80]!r}")
        return web.Response(
            body=self._files[name],
            content_type=GALLERY_FILES[name],
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def list_models(self, request: web.Request) -> web.Response:
        """ListModels as JSON."""
        return await self._unary(
            request, "ListModels", self.servicer.ListModels, pb.ListModelsRequest()
        )

    async def describe_model(self, request: web.Request) -> web.Response:
        """DescribeModel as JSON (404 naming the served models)."""
        body = pb.DescribeModelRequest(model=request.match_info["model"])
        return await self._unary(request, "DescribeModel", self.servicer.DescribeModel, body)

    async def image(self, request: web.Request) -> web.Response:
        """A cached picture by its key; immutable, so browsers keep it."""
        try:
            self._authorize(request, "DescribeModel")
        except CallAborted as error:
            return self._error(error)
        key = request.match_info["key"]
        cache = self.servicer.cache
        if cache is None:
            return self._error(
                CallAborted(grpc.StatusCode.NOT_FOUND, "this server keeps no result cache")
            )
        if not is_key(key):
            return self._error(
                CallAborted(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "an image key is 32 lowercase hex digits (FilterResult.image_key)",
                )
            )
        found = await asyncio.get_running_loop().run_in_executor(None, cache.picture, key)
        if found is None:
            return self._error(
                CallAborted(
                    grpc.StatusCode.NOT_FOUND,
                    "no cached picture under this key (evicted, expired, or a dead filter); "
                    "ask POST /v1/visualize again",
                )
            )
        data, expires = found
        # Verified bytes only, kept by browsers no longer than the entry lives; private
        # when a token was needed to read it.
        max_age = NEVER_EXPIRES_MAX_AGE if not expires else max(0, int(expires - time.time()))
        return web.Response(
            body=data,
            content_type="image/png",
            headers={
                **SECURITY_HEADERS,
                "Cache-Control": f"{'private' if self.authenticator else 'public'}, "
                f"max-age={max_age}",
            },
        )

    async def visualize(self, request: web.Request) -> web.StreamResponse:
        """VisualizeFilters: NDJSON lines (or server-sent events) as the filters finish."""
        try:
            self._authorize(request, "VisualizeFilters")
            body = await self._request_body(request)
        except CallAborted as error:
            return self._error(error)
        outlet = _Outlet(request, self.servicer.stall_seconds)
        try:
            await self.servicer.VisualizeFilters(
                body.SerializeToString(), HttpCallContext(outlet.send)
            )
        except CallAborted as error:
            if not outlet.started:
                return self._error(error)
            await outlet.end(_error_frame(error, outlet.events))
            return outlet.response
        except (asyncio.CancelledError, ConnectionError):
            outlet.close()
            raise
        except Exception as error:  # a bug of ours: INTERNAL, never a truncated stream
            log.exception("the HTTP gateway failed on a stream")
            failure = CallAborted(grpc.StatusCode.INTERNAL, f"the gateway failed: {error}")
            if not outlet.started:
                return self._error(failure)
            await outlet.end(_error_frame(failure, outlet.events))
            return outlet.response
        await outlet.end(b"")
        return outlet.response

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: the body's declared size and type are checked first."""
        if request.version != HttpVersion11:
            return None  # HTTP/1.0 has no interim responses
        if request.headers.get("Expect", "").lower() != "100-continue":
            return self._counted(
                request,
                CallAborted(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "the only expectation this gateway meets is 100-continue",
                    http_status=417,
                ),
            )
        try:
            self._check_body(request)
        except CallAborted as error:
            return self._counted(request, error)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started
        return None

    def _counted(self, request: web.Request, error: CallAborted) -> web.Response:
        """An error answered before the middleware runs (expectations), counted as it would."""
        name = request.match_info.route.resource
        route = name.canonical if name is not None else "unmatched"
        self.metrics.http_requests.labels(route, str(error.http_status)).inc()
        return self._error(error)

    def _check_body(self, request: web.Request) -> None:
        """CallAborted for a body that is not JSON (415) or declares more than the limit (413)."""
        if request.content_type != "application/json":
            # Also what keeps other web pages out: a cross-origin JSON POST needs a CORS
            # preflight, which this gateway never grants.
            raise CallAborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                "send the request as JSON with Content-Type: application/json",
                http_status=415,
            )
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise CallAborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a request body is at most {MAX_BODY_BYTES} bytes",
                http_status=413,
            )

    async def _request_body(self, request: web.Request) -> pb.VisualizeFiltersRequest:
        """The JSON body as a request, or INVALID_ARGUMENT (415, 413, 408 for a slow body)."""
        self._check_body(request)
        try:
            async with asyncio.timeout(self.limits.read_seconds):
                data = await request.read()
        except TimeoutError:
            self.metrics.rejected.labels("http_slow_body").inc()
            raise CallAborted(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request body did not arrive within {self.limits.read_seconds:.0f} s",
                http_status=408,
            ) from None
        try:
            text = data.decode("utf-8") or "{}"
            return json_format.Parse(text, pb.VisualizeFiltersRequest())
        # ValueError: bad UTF-8 or JSON; RecursionError: JSON nested beyond Python's stack.
        except (json_format.ParseError, ValueError, RecursionError) as error:
            self.servicer.metrics.rejected.labels("malformed").inc()
            raise CallAborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the body is not a filtercast.v1.VisualizeFiltersRequest in JSON: "
                f"{str(error)[:300]}",
            ) from error


class _Outlet:
    """One HTTP stream's writer.

    Frames are built off the event loop, a heartbeat goes out while the
    stream waits, and a client that stops reading is cut off after the stall
    limit: nothing waits on it forever.
    """

    def __init__(self, request: web.Request, stall_seconds: float) -> None:
        self.request = request
        self.stall_seconds = stall_seconds
        self.events = "text/event-stream" in request.headers.get("Accept", "")
        self.response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "text/event-stream" if self.events else "application/x-ndjson",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # proxies pass each line on at once
            }
        )
        self._lock = asyncio.Lock()
        self._heartbeat: asyncio.Task | None = None

    @property
    def started(self) -> bool:
        """The status line is out: later errors can only be a last frame."""
        return self.response.prepared

    async def send(self, message: Message) -> None:
        """Write one message as a frame (the first starts the response and the heartbeat)."""
        loop = asyncio.get_running_loop()
        try:
            frame = await loop.run_in_executor(None, _frame, message, self.events)
        except Exception:  # ours, not the client's: the servicer would see only a lost client
            log.exception("the HTTP gateway could not encode a %s", type(message).__name__)
            raise
        if not self.started:
            await self.response.prepare(self.request)
            self._heartbeat = asyncio.ensure_future(self._beat())
        await self._write(frame)

    async def end(self, frame: bytes) -> None:
        """The last frame (if any) and the end of the body."""
        self.close()
        if frame:
            await self._write(frame)
        async with self._lock:
            await self._bounded(self.response.write_eof())

    def close(self) -> None:
        """Stop the heartbeat."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self._bounded(self.response.write(data))

    async def _bounded(self, write: Any) -> None:
        """A write the client does not take within the stall limit closes the connection."""
        try:
            await asyncio.wait_for(write, self.stall_seconds)
        except TimeoutError:
            if self.request.transport is not None:
                self.request.transport.abort()
            raise ConnectionResetError("the client read nothing within the stall limit") from None

    async def _beat(self) -> None:
        """A blank line (NDJSON) or an SSE comment while filters wait: proxies keep the stream."""
        beat = b": keepalive\n\n" if self.events else b"\n"
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if self._lock.locked():
                continue
            try:
                await self._write(beat)
            except ConnectionError:
                return


def _loopback_name(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").split("]")[0].lower()
    return name in ("localhost", "127.0.0.1", "::1") or name.endswith(".localhost")


def _frame(message: Message, events: bool) -> bytes:
    """One streamed message: an NDJSON line {"result": ...}, or an SSE event named by its kind."""
    text = json.dumps(to_json(message), separators=(",", ":"))
    if events:
        return f"event: {message.WhichOneof('event')}\ndata: {text}\n\n".encode()
    return ('{"result":' + text + "}\n").encode()


def _error_frame(error: CallAborted, events: bool) -> bytes:
    """The stream's last frame when it ends in an error."""
    text = json.dumps(error.status(), separators=(",", ":"))
    if events:
        return f"event: error\ndata: {text}\n\n".encode()
    return ('{"error":' + text + "}\n").encode()


class GatewayListener:
    """The gateway's socket and aiohttp runner; `await close()` stops both."""

    def __init__(self, server: asyncio.Server, runner: web.AppRunner) -> None:
        self.server = server
        self.runner = runner

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when 0 was asked for)."""
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, then end the connections (SHUTDOWN_SECONDS at most)."""
        self.server.close()
        await self.runner.cleanup()


async def serve_gateway(
    gateway: Gateway, host: str, port: int, tls: ssl.SSLContext | None = None
) -> GatewayListener:
    """Start the gateway on host:port, at most `gateway.limits.max_connections` at once."""
    limits = gateway.limits
    runner = web.AppRunner(
        gateway.app(),
        access_log=None,
        handle_signals=False,
        # Also the time a new request's headers may take: see HttpLimits.read_seconds.
        keepalive_timeout=limits.read_seconds,
        # A body left unread (a refused request) is drained this long so the client
        # can read the answer, then the connection closes: not aiohttp's 10 s.
        lingering_time=LINGER_SECONDS,
        handler_cancellation=True,  # a client that leaves cancels its stream's work
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    assert runner.server is not None
    factory = ConnectionLimit(
        runner.server,
        limits.max_connections,
        limits.handshake_seconds,
        on_change=gateway.metrics.http_connections.set,
        on_refuse=gateway.metrics.rejected.labels("http_connections").inc,
    )
    server = await asyncio.get_running_loop().create_server(
        factory,
        host.strip("[]"),
        port,
        ssl=tls,
        ssl_handshake_timeout=limits.handshake_seconds if tls else None,
        backlog=128,
        reuse_address=True,
    )
    return GatewayListener(server, runner)


def tls_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """The gRPC port's certificate (and client CA for mTLS) for the gateway."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context

"""The HTTP/JSON gateway and the browser gallery, on the server's own event loop.

aiohttp (already the /metrics server; asyncio-native, maintained, streaming
responses) serves, on `--http-port`:

    GET  /                        the gallery page (gallery/ in this package)
    GET  /gallery/{file}          its script and style sheet
    GET  /v1/models               ListModels
    GET  /v1/models/{model}       DescribeModel
    POST /v1/models/{model}:analyze  AnalyzeImage: JSON, or the image as the body (images.py)
    POST /v1/visualize            VisualizeFilters: the request as JSON, the stream as
                                  NDJSON lines {"result": <response>} (or server-sent
                                  events with Accept: text/event-stream)
    POST /v1/visualize:accentuate  the same, its JSON carrying a start image (images.py)
    POST /v1/models/{model}/datasets/{dataset}:examples  DatasetExamples: the rest of the
                                  request as JSON, the stream as NDJSON (or SSE)
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

Limits of its own (HttpPolicy): connections at once (connections.py), the time
a request's headers and then its body may take to arrive (a client that
sends either slowly is cut off), and a body size checked before reading,
also before answering `Expect: 100-continue`.
"""

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import grpc
from aiohttp import HttpVersion11, web
from google.protobuf.message import Message

from filtercast.contract import is_loopback_host
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.cache.keys import is_key
from filtercast_server.cache.results import ResultCache
from filtercast_server.observability.metrics import Metrics
from filtercast_server.serving.auth import AuthError, TokenAuthenticator
from filtercast_server.serving.front import Front
from filtercast_server.serving.gateway.calls import (
    HTTP_CODES,
    SECURITY_HEADERS,
    CallAborted,
    HttpCallContext,
    MessageT,
    error_response,
    parsed_json,
    slow_body,
    to_json,
)
from filtercast_server.serving.gateway.connections import ConnectionLimit
from filtercast_server.serving.gateway.images import ImageBodies
from filtercast_server.serving.gateway.stream import Outlet, error_frame
from filtercast_server.serving.interceptor import bind_caller

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a request is under 2 KiB; 2,048 listed filters under 16 KiB
SHUTDOWN_SECONDS = 1.0  # streams have had the drain already; then the gateway closes
LINGER_SECONDS = 1.0  # a refused request's unread body is drained this long, not aiohttp's 10 s
NEVER_EXPIRES_MAX_AGE = 24 * 3600  # browsers keep a picture whose entry has no TTL a day
GALLERY_FILES = {
    "index.html": "text/html",
    "gallery.js": "text/javascript",
    "gallery.css": "text/css",
}


@dataclass(frozen=True)
class HttpPolicy:
    """What one HTTP client may hold, and how long a stream waits for it to read."""

    max_connections: int = 256
    # A request's headers must arrive within this of the connection opening (or of
    # its last response: aiohttp's keep-alive timer, which also closes idle ones),
    # and its body within this of its headers.
    read_seconds: float = 10.0
    handshake_seconds: float = 10.0  # TLS
    stall_seconds: float = 60.0  # a client that takes nothing this long is cut off
    # Listening on loopback only: a Host header naming anything else is a web page's
    # DNS-rebinding trick to reach it, and is refused.
    loopback: bool = False


class Gateway:
    """The HTTP routes over the service's front (the gRPC servicer's own methods)."""

    def __init__(
        self,
        front: Front,
        policy: HttpPolicy,
        *,
        metrics: Metrics,
        cache: ResultCache | None = None,
        authenticator: TokenAuthenticator | None = None,
    ) -> None:
        self.front = front
        self.policy = policy
        self.metrics = metrics
        self.cache = cache
        self.authenticator = authenticator
        package = resources.files("filtercast_server.serving.gateway") / "gallery"
        self._files = {name: (package / name).read_bytes() for name in GALLERY_FILES}
        self.images = ImageBodies(metrics, policy.read_seconds)

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._observe])
        app.router.add_get("/", self.index)
        app.router.add_get("/gallery/{name}", self.gallery_file)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.describe_model)
        app.router.add_post("/v1/visualize", self.visualize, expect_handler=self._expect)
        app.router.add_post(
            "/v1/visualize:accentuate", self.accentuate, expect_handler=self._expect_json_image
        )
        app.router.add_post(
            "/v1/models/{model}:analyze", self.analyze, expect_handler=self._expect_image
        )
        app.router.add_post(
            "/v1/models/{model}/datasets/{dataset}:examples",
            self.examples,
            expect_handler=self._expect,
        )
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
            if self.policy.loopback and not is_loopback_host(request.host):
                refusal = CallAborted(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this gateway listens on loopback: address it as 127.0.0.1, [::1] or localhost",
                    http_status=421,
                )
                response = error_response(refusal)
            else:
                response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:  # 404 for an unknown path, 405, 413...
            status = error.status
            code = HTTP_CODES.get(error.status, grpc.StatusCode.UNKNOWN)
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
            return error_response(CallAborted(code, error.reason, http_status=status), allow)
        finally:
            self.metrics.http_requests.labels(name, str(status)).inc()
            self.metrics.http_duration.labels(name).observe(time.perf_counter() - started)

    def _authorize(self, request: web.Request, method: str) -> None:
        """Bind the caller's identity; CallAborted as the gRPC port would refuse the call."""
        caller = request.remote or "unknown"
        if self.authenticator is not None:
            try:
                metadata = [("authorization", request.headers.get("Authorization", ""))]
                caller = self.authenticator.authorize(metadata, method).name
            except AuthError as error:
                self.metrics.rejected.labels(error.reason).inc()
                raise CallAborted(error.code, str(error)) from error
        bind_caller(caller)

    async def _unary(
        self, request: web.Request, method: str, call: Callable, body: Message
    ) -> web.Response:
        try:
            self._authorize(request, method)
            response = await call(body.SerializeToString(), HttpCallContext())
        except CallAborted as error:
            return error_response(error)
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
            request, "ListModels", self.front.ListModels, pb.ListModelsRequest()
        )

    async def describe_model(self, request: web.Request) -> web.Response:
        """DescribeModel as JSON (404 naming the served models)."""
        body = pb.DescribeModelRequest(model=request.match_info["model"])
        return await self._unary(request, "DescribeModel", self.front.DescribeModel, body)

    async def image(self, request: web.Request) -> web.Response:
        """A cached picture by its key, verified, kept by browsers while its entry lives."""
        try:
            self._authorize(request, "DescribeModel")
        except CallAborted as error:
            return error_response(error)
        key = request.match_info["key"]
        cache = self.cache
        if cache is None:
            return error_response(
                CallAborted(grpc.StatusCode.NOT_FOUND, "this server keeps no result cache")
            )
        if not is_key(key):
            return error_response(
                CallAborted(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "an image key is 32 lowercase hex digits (FilterResult.image_key)",
                )
            )
        found = await asyncio.get_running_loop().run_in_executor(None, cache.picture, key)
        if found is None:
            return error_response(
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

    async def analyze(self, request: web.Request) -> web.Response:
        """AnalyzeImage: the request as JSON, or the image as the body (gateway/images.py)."""
        try:
            self._authorize(request, "AnalyzeImage")
            body = await self.images.request_of(request)
            response = await self.front.AnalyzeImage(body.SerializeToString(), HttpCallContext())
        except CallAborted as error:
            return error_response(error)
        return web.json_response(to_json(response), headers=SECURITY_HEADERS)

    async def visualize(self, request: web.Request) -> web.StreamResponse:
        """VisualizeFilters: NDJSON lines (or server-sent events) as the filters finish."""
        return await self._stream(request, "VisualizeFilters", self._visualize_body)

    async def accentuate(self, request: web.Request) -> web.StreamResponse:
        """VisualizeFilters from a start image: its body is read as images are (images.py)."""
        return await self._stream(request, "VisualizeFilters", self.images.visualize_request_of)

    async def examples(self, request: web.Request) -> web.StreamResponse:
        """DatasetExamples: the model and dataset from the path, the rest from the JSON body."""

        async def read(request: web.Request) -> pb.DatasetExamplesRequest:
            body = await self._request_body(request, pb.DatasetExamplesRequest())
            body.model, body.dataset = request.match_info["model"], request.match_info["dataset"]
            return body

        return await self._stream(request, "DatasetExamples", read)

    async def _stream(
        self, request: web.Request, method: str, read: Callable[[web.Request], Awaitable[Message]]
    ) -> web.StreamResponse:
        """The stream of one call of `method` whose request `read` takes from the body."""
        try:
            self._authorize(request, method)
            body = await read(request)
        except CallAborted as error:
            return error_response(error)
        outlet = Outlet(request, self.policy.stall_seconds)
        try:
            await getattr(self.front, method)(
                body.SerializeToString(), HttpCallContext(outlet.send)
            )
        except CallAborted as error:
            if not outlet.started:
                return error_response(error)
            await outlet.end(error_frame(error, outlet.events))
            return outlet.response
        except (asyncio.CancelledError, ConnectionError):
            outlet.close()
            raise
        except Exception as error:  # a bug of ours: INTERNAL, never a truncated stream
            log.exception("the HTTP gateway failed on a stream")
            failure = CallAborted(grpc.StatusCode.INTERNAL, f"the gateway failed: {error}")
            if not outlet.started:
                return error_response(failure)
            await outlet.end(error_frame(failure, outlet.events))
            return outlet.response
        await outlet.end(b"")
        return outlet.response

    async def _expect_image(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue` on an image body: its declared size and type first."""
        return await self._expect(request, self.images.check)

    async def _expect_json_image(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue` on a JSON body carrying an image."""
        return await self._expect(request, self.images.check_json)

    async def _expect(
        self, request: web.Request, check: Callable[[web.Request], None] | None = None
    ) -> web.StreamResponse | None:
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
            (check or self._check_body)(request)
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
        return error_response(error)

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
                f"a request body is at most {MAX_BODY_BYTES} bytes (a request with a start "
                "image goes to /v1/visualize:accentuate)",
                http_status=413,
            )

    async def _visualize_body(self, request: web.Request) -> pb.VisualizeFiltersRequest:
        """The JSON body as a VisualizeFiltersRequest."""
        return await self._request_body(request, pb.VisualizeFiltersRequest())

    async def _request_body(self, request: web.Request, message: MessageT) -> MessageT:
        """The JSON body as `message`, or INVALID_ARGUMENT (415, 413, 408 for a slow body)."""
        self._check_body(request)
        try:
            async with asyncio.timeout(self.policy.read_seconds):
                data = await request.read()
        except TimeoutError:
            self.metrics.rejected.labels("http_slow_body").inc()
            raise slow_body(self.policy.read_seconds) from None
        return parsed_json(data, message, self.metrics)


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
    """Start the gateway on host:port, at most `gateway.policy.max_connections` at once."""
    limits = gateway.policy
    runner = web.AppRunner(
        gateway.app(),
        access_log=None,
        handle_signals=False,
        # Also the time a new request's headers may take: see HttpPolicy.read_seconds.
        keepalive_timeout=limits.read_seconds,
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

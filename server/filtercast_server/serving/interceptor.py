"""Around every RPC: who calls, bearer-token auth, and the standard gRPC server metrics.

One grpc.aio interceptor wraps each method handler, whatever its kind and
whoever wrote it (our service, health, reflection):

- `grpc_server_started_total`, `grpc_server_handled_total` (by final status
  code), `grpc_server_handling_seconds` and the message counters, labelled as
  go-grpc-middleware labels them. A call ended by the client is CANCELLED, by
  its deadline DEADLINE_EXCEEDED — never UNKNOWN.
- With a TokenAuthenticator, every call but health needs a valid bearer token
  (UNAUTHENTICATED, or PERMISSION_DENIED for a role that may not call the
  method); the messages say nothing about which tokens exist.
- The caller's identity — the token's name, else the peer's address without
  its port — is available to the handler through `current_caller()`.
"""

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from filtercast_server.observability.logs import ThrottledLog
from filtercast_server.observability.metrics import Metrics
from filtercast_server.serving.auth import AuthError, TokenAuthenticator

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"  # always open: probes carry no token
# A client's deadline timer fires before the server's (the server counts the timeout
# from when the headers arrived) and sends the same RST_STREAM as a user's cancel, so
# the server sees a cancel a little before its own deadline. A cancel this close to
# the deadline is the deadline.
DEADLINE_MARGIN_SECONDS = 0.25
_caller: contextvars.ContextVar[str] = contextvars.ContextVar("filtercast_caller", default="")


def current_caller() -> str:
    """Who makes the RPC being handled: the token's name, else the peer's address."""
    return _caller.get()


def bind_caller(caller: str) -> None:
    """Name the caller of the call handled in this task (the HTTP gateway's twin of _begin)."""
    _caller.set(caller)


def peer_host(peer: str) -> str:
    """A gRPC peer string without its port: ipv4:10.0.0.1:5000 -> 10.0.0.1, ipv6:[::1]:1 -> ::1.

    grpc.aio percent-encodes the brackets of an IPv6 peer (ipv6:%5B::1%5D:1).
    """
    scheme, _, address = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return urllib.parse.unquote(address).rsplit(":", 1)[0].strip("[]")
    return peer


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status a finished call ended with, as the client saw it."""
    code = context.code()
    if code is not None:  # set by abort() or set_code()
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_MARGIN_SECONDS:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class _CountingContext:
    """A servicer context that counts the messages a handler writes through it."""

    def __init__(self, context: grpc.aio.ServicerContext, on_write: Callable[[], None]) -> None:
        self._context = context
        self._on_write = on_write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        """Send one message, then count it."""
        await self._context.write(message)
        self._on_write()


class ServerPolicy(grpc.aio.ServerInterceptor):
    """Identity, authentication and metrics for every RPC of a server."""

    def __init__(
        self,
        metrics: Metrics,
        authenticator: TokenAuthenticator | None = None,
        throttle: ThrottledLog | None = None,
    ) -> None:
        self.metrics = metrics
        self.authenticator = authenticator
        self.throttle = throttle or ThrottledLog(log)

    async def intercept_service(  # type: ignore[override]  # grpc takes None (UNIMPLEMENTED)
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """The method's handler, wrapped (None: grpc answers UNIMPLEMENTED)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        if handler.unary_unary:
            labels = ("unary", service, method)
            return handler._replace(unary_unary=self._unary(handler.unary_unary, labels, False))
        if handler.unary_stream:
            labels = ("server_stream", service, method)
            return handler._replace(
                unary_stream=self._streaming(handler.unary_stream, labels, False)
            )
        if handler.stream_unary:
            labels = ("client_stream", service, method)
            return handler._replace(stream_unary=self._unary(handler.stream_unary, labels, True))
        labels = ("bidi_stream", service, method)
        return handler._replace(stream_stream=self._streaming(handler.stream_stream, labels, True))

    # --- per call ---------------------------------------------------------------------

    async def _begin(self, labels: tuple[str, str, str], context: Any) -> None:
        """Count the start, authenticate, and record who calls."""
        self.metrics.rpc_started.labels(*labels).inc()
        _, service, method = labels
        caller = peer_host(context.peer())
        if self.authenticator is not None and service != HEALTH_SERVICE:
            try:
                caller = self.authenticator.authorize(context.invocation_metadata(), method).name
            except AuthError as error:
                self.metrics.rejected.labels(error.reason).inc()
                self.throttle.warning(
                    (caller, error.reason), "refused %s from %s: %s", method, caller, error
                )
                await context.abort(error.code, str(error))
        _caller.set(caller)

    @contextlib.asynccontextmanager
    async def _observed(
        self, labels: tuple, context: Any, request: Any, streaming_in: bool
    ) -> AsyncIterator[Any]:
        """Around one call: count it in, authenticate, and record how it ended.

        Yields the request, wrapped to count its messages when it streams in.
        """
        started, error = time.perf_counter(), None
        try:
            if streaming_in:
                request = self._counting(request, labels)
            else:
                self.metrics.rpc_received.labels(*labels).inc()
            await self._begin(labels, context)
            yield request
        except BaseException as caught:  # GeneratorExit too: a stream the client left
            error = caught
            raise
        finally:
            code = final_code(context, error)
            self.metrics.rpc_handled.labels(*labels, code.name).inc()
            self.metrics.rpc_handling.labels(*labels).observe(time.perf_counter() - started)

    def _counting(self, requests: AsyncIterator, labels: tuple) -> AsyncIterator:
        received = self.metrics.rpc_received.labels(*labels)

        async def counted() -> AsyncIterator:
            async for request in requests:
                received.inc()
                yield request

        return counted()

    def _unary(self, inner: Callable, labels: tuple, streaming_in: bool) -> Callable:
        async def behavior(request: Any, context: Any) -> Any:
            async with self._observed(labels, context, request, streaming_in) as request:
                response = inner(request, context)
                if inspect.isawaitable(response):
                    response = await response
                self.metrics.rpc_sent.labels(*labels).inc()
                return response

        return behavior

    def _streaming(self, inner: Callable, labels: tuple, streaming_in: bool) -> Callable:
        sent = self.metrics.rpc_sent.labels(*labels)
        if inspect.isasyncgenfunction(inner):

            async def generate(request: Any, context: Any) -> AsyncIterator:
                async with self._observed(labels, context, request, streaming_in) as request:
                    async for response in inner(request, context):
                        yield response
                        sent.inc()

            return generate

        async def write(request: Any, context: Any) -> None:
            async with self._observed(labels, context, request, streaming_in) as request:
                await inner(request, _CountingContext(context, sent.inc))

        return write

"""The HTTP gateway's own connection limit, below the process's open-file budget.

aiohttp has none: a flood of connections (idle, or sending a body that never
ends) would take every file descriptor the process has, and the gRPC port
and its health checks with them. Each accepted socket is counted here from
the moment it is accepted (before any TLS handshake) until it closes; past
`limit` a connection is answered 503 with a Retry-After and closed at once.
"""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc

RETRY_AFTER_SECONDS = 1


def refusal(limit: int) -> bytes:
    """The whole HTTP response a connection over the limit gets (google.rpc.Status JSON)."""
    body = json.dumps(
        {
            "code": grpc.StatusCode.UNAVAILABLE.value[0],
            "message": f"the HTTP gateway holds {limit} connections, its limit; retry shortly",
        }
    ).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json\r\n"
        b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (RETRY_AFTER_SECONDS, len(body), body)
    )


class _Refused(asyncio.Protocol):
    """A connection over the limit: the refusal, then closed."""

    def __init__(self, response: bytes) -> None:
        self.response = response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.response)
        transport.close()


class _Counted(asyncio.Protocol):
    """An admitted connection: aiohttp's protocol, with its slot given back when it ends."""

    def __init__(self, inner: Any, release: Callable[[], None]) -> None:
        self.inner = inner
        self.made = False
        self._release = release
        self._released = False

    def release(self) -> None:
        """Give the slot back (once, however often it is called)."""
        if not self._released:
            self._released = True
            self._release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self.inner.connection_lost(exc)


class ConnectionLimit:
    """A protocol factory for `loop.create_server` admitting at most `limit` connections.

    `inner` makes the real protocol (aiohttp's server); `on_change(open)`
    follows the count, `on_refuse()` each refusal. A TLS handshake that never
    completes never reaches the protocol; its slot comes back after
    `handshake_seconds`.
    """

    def __init__(
        self,
        inner: Callable[[], Any],
        limit: int,
        handshake_seconds: float,
        on_change: Callable[[int], None] = lambda _: None,
        on_refuse: Callable[[], None] = lambda: None,
    ) -> None:
        self.inner = inner
        self.limit = limit
        self.handshake_seconds = handshake_seconds
        self.on_change = on_change
        self.on_refuse = on_refuse
        self.open = 0
        self._response = refusal(limit)

    def __call__(self) -> asyncio.Protocol:
        """The protocol of one accepted connection: aiohttp's, or the refusal past the limit."""
        if self.open >= self.limit:
            self.on_refuse()
            return _Refused(self._response)
        self.open += 1
        self.on_change(self.open)
        counted = _Counted(self.inner(), self._released)

        def unless_made() -> None:  # a TLS handshake that never completed
            if not counted.made:
                counted.release()

        asyncio.get_running_loop().call_later(self.handshake_seconds + 1, unless_made)
        return counted

    def _released(self) -> None:
        self.open -= 1
        self.on_change(self.open)

"""One HTTP stream's writer: NDJSON lines or server-sent events, a heartbeat, a stall limit."""

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from filtercast_server.serving.gateway.calls import SECURITY_HEADERS, CallAborted, to_json

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0  # a stream waiting for its filters sends a blank frame this often


class Outlet:
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
            data = await loop.run_in_executor(None, frame, message, self.events)
        except Exception:  # ours, not the client's: the servicer would see only a lost client
            log.exception("the HTTP gateway could not encode a %s", type(message).__name__)
            raise
        if not self.started:
            await self.response.prepare(self.request)
            self._heartbeat = asyncio.ensure_future(self._beat())
        await self._write(data)

    async def end(self, last: bytes) -> None:
        """The last frame (if any) and the end of the body."""
        self.close()
        if last:
            await self._write(last)
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


def frame(message: Message, events: bool) -> bytes:
    """One streamed message: an NDJSON line {"result": ...}, or an SSE event named by its kind."""
    text = json.dumps(to_json(message), separators=(",", ":"))
    if events:
        return f"event: {message.WhichOneof('event')}\ndata: {text}\n\n".encode()
    return ('{"result":' + text + "}\n").encode()


def error_frame(error: CallAborted, events: bool) -> bytes:
    """The stream's last frame when it ends in an error."""
    text = json.dumps(error.status(), separators=(",", ":"))
    if events:
        return f"event: error\ndata: {text}\n\n".encode()
    return ('{"error":' + text + "}\n").encode()

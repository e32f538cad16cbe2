"""How many VisualizeFilters streams may be open: in all, and per client.

Only the visualization stream is limited here; health, reflection and the
model listing calls are never refused, so probes answer under any load.
Runs on the server's event loop (no locks).
"""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from filtercast_server.errors import RefusedError

STREAM_RETRY_SECONDS = 5.0  # a stream's end cannot be predicted: a short, fixed hint


class StreamAdmission:
    """Counts open streams and refuses one past `max_streams` or `max_per_client`."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.open = 0
        self._by_client: Counter[str] = Counter()

    @contextmanager
    def admit(self, client: str) -> Iterator["Slot"]:
        """Hold one stream slot for `client` for the block (or until slot.release())."""
        if self.open >= self.max_streams:
            raise RefusedError(
                "streams",
                f"this server has {self.open} streams open, its limit; retry shortly "
                "(or reach another replica)",
                STREAM_RETRY_SECONDS,
            )
        if self._by_client[client] >= self.max_per_client:
            raise RefusedError(
                "client_streams",
                f"this client has {self._by_client[client]} streams open, the limit per "
                "client; finish or cancel one first",
                STREAM_RETRY_SECONDS,
            )
        self.open += 1
        self._by_client[client] += 1
        slot = Slot(self, client)
        try:
            yield slot
        finally:
            slot.release()

    def _release(self, client: str) -> None:
        self.open -= 1
        self._by_client[client] -= 1
        if not self._by_client[client]:
            del self._by_client[client]


class Slot:
    """One admitted stream; release() frees it early (idempotent)."""

    def __init__(self, admission: StreamAdmission, client: str) -> None:
        self._admission = admission
        self._client = client
        self._held = True

    def release(self) -> None:
        """Give the slot back, once."""
        if self._held:
            self._held = False
            self._admission._release(self._client)

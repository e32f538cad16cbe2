"""Who may start a VisualizeFilters stream: open streams, and new compiled steps per client.

Only the visualization stream is limited here; health, reflection and the
model listing calls are never refused, so probes answer under any load.
Runs on the server's event loop (no locks).
"""

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from filtercast_server.errors import RefusedError

STREAM_RETRY_SECONDS = 5.0  # a stream's end cannot be predicted: a short, fixed hint


class StreamAdmission:
    """Counts open streams (or other calls: `what`) and refuses one past either limit."""

    def __init__(self, max_streams: int, max_per_client: int, what: str = "streams") -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.what = what  # the calls counted, in messages and refusal reasons
        self.open = 0
        self._by_client: Counter[str] = Counter()

    @contextmanager
    def admit(self, client: str) -> Iterator["Slot"]:
        """Hold one stream slot for `client` for the block (or until slot.release())."""
        what = self.what
        if self.open >= self.max_streams:
            raise RefusedError(
                what,
                f"this server has {self.open} {what} open, its limit; retry shortly "
                "(or reach another replica)",
                STREAM_RETRY_SECONDS,
            )
        if self._by_client[client] >= self.max_per_client:
            raise RefusedError(
                f"client_{what}",
                f"this client has {self._by_client[client]} {what} open, the limit per "
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


class NewStepBudget:
    """Per client, how many requests a minute may need a step the engine has not compiled.

    A step is compiled once per (model, loss structure, preset's method,
    precision) and costs a trace of the model on the worker thread, which
    every client waits for; the engine keeps the latest 32. Without a bound,
    one client naming a new mix of terms in every request would keep the
    worker tracing and evict everyone's steps. A token bucket per client:
    `per_minute` tokens, refilled evenly over a minute; a request for a step
    already compiled costs nothing.
    """

    MAX_CLIENTS = 4096  # buckets kept; full ones are dropped first

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}  # client -> (tokens, as of when)

    def _level(self, client: str, now: float) -> float:
        tokens, then = self._tokens.get(client, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - then) * self.per_minute / 60.0)

    def charge(self, client: str) -> None:
        """Spend one of `client`'s tokens, or RefusedError saying when one is back."""
        now = self._clock()
        level = self._level(client, now)
        if level < 1.0:
            wait = (1.0 - level) * 60.0 / self.per_minute
            raise RefusedError(
                "client_new_steps",
                f"this client asked for {self.per_minute} kinds of work this server had not "
                "compiled within a minute, the limit per client (each costs a trace of the "
                "model); repeat a kind it has asked for, or retry in "
                f"{max(1, round(wait))} s",
                wait,
            )
        if len(self._tokens) >= self.MAX_CLIENTS and client not in self._tokens:
            self._forget_full(now)
        self._tokens[client] = (level - 1.0, now)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they hold nothing a new one would not)."""
        full = [c for c in self._tokens if self._level(c, now) >= self.per_minute]
        for client in full or list(self._tokens)[: len(self._tokens) // 2]:
            del self._tokens[client]

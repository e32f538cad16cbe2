"""The server's view of the cache: look filters up, store finished ones, never fail a request.

Lookups run on the caller's thread (the servicer calls them in an executor);
stores are queued to one writer thread, which encodes and writes off the
engine's and the event loop's paths. A picture waits in memory between its
delivery and its write, so a request arriving meanwhile finds it too.

Faults (Redis down, a full disk, a corrupt entry) are logged (throttled),
counted in filtercast_cache_errors_total{operation}, and the filters are
computed. After a lookup or store fault the backend rests for
`retry_seconds`: a dead Redis costs one timeout, not one per request.
"""

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from filtercast_server.cache.backends import Backend
from filtercast_server.cache.entry import CorruptEntryError, pack, unpack
from filtercast_server.png import png_bytes
from filtercast_server.throttle import ThrottledLog
from filtercast_server.work import FilterOutcome

if TYPE_CHECKING:
    from filtercast_server.metrics import Metrics

log = logging.getLogger(__name__)

WRITE_QUEUE = 1024  # finished pictures waiting to be written; beyond it a store is dropped
VOLUME_INTERVAL_SECONDS = 1.0  # how often the bytes gauge asks the backend


class ResultCache:
    """Lookups, background stores and fault accounting on one backend."""

    def __init__(
        self,
        backend: Backend,
        metrics: "Metrics | None" = None,
        *,
        retry_seconds: float = 5.0,
        write_queue: int = WRITE_QUEUE,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self._pending: dict[str, FilterOutcome] = {}  # delivered, not yet written
        self._writes: queue.Queue[tuple[str, FilterOutcome] | None] = queue.Queue(write_queue)
        self._lock = threading.Lock()
        self._resting_until = 0.0
        self._volume_read = 0.0
        self._warn = ThrottledLog(log)
        self._writer = threading.Thread(
            target=self._write_loop, name="filtercast-cache-writer", daemon=True
        )
        self._writer.start()

    @property
    def description(self) -> str:
        """Where entries live."""
        return self.backend.description

    # --- lookups ------------------------------------------------------------------------

    def lookup(self, keys: Mapping[int, str]) -> dict[int, FilterOutcome]:
        """The cached outcomes among `keys` (filter index -> key), marked cached.

        Blocking: a backend read. A fault or a corrupt entry is a miss.
        """
        hits: dict[int, FilterOutcome] = {}
        with self._lock:
            for index, key in keys.items():
                if (outcome := self._pending.get(key)) is not None:
                    hits[index] = dataclasses.replace(outcome, cached=True)
        wanted = {key: index for index, key in keys.items() if index not in hits}
        if wanted and self._awake():
            try:
                found = self.backend.get_many(wanted)
            except Exception as error:
                self._fault("lookup", error, rest=True)
                found = {}
            for key, blob in found.items():
                try:
                    outcome = unpack(blob)
                    if outcome.index != wanted[key]:
                        raise CorruptEntryError(f"entry holds filter {outcome.index}")
                except CorruptEntryError as error:
                    self._fault("corrupt", error)
                    self._forget(key)
                    continue
                hits[wanted[key]] = outcome
        if self.metrics is not None:
            self.metrics.cache_hits.inc(len(hits))
            self.metrics.cache_misses.inc(len(keys) - len(hits))
        return hits

    def png(self, key: str) -> bytes | None:
        """The picture stored under `key` as PNG; None when absent, dead or unreadable."""
        with self._lock:
            outcome = self._pending.get(key)
        if outcome is not None:
            return png_bytes(outcome.image) if outcome.image is not None else None
        if not self._awake():
            return None
        try:
            blob = self.backend.get_many([key]).get(key)
        except Exception as error:
            self._fault("lookup", error, rest=True)
            return None
        if blob is None:
            return None
        try:
            return unpack(blob).png
        except CorruptEntryError as error:
            self._fault("corrupt", error)
            self._forget(key)
            return None

    # --- stores -------------------------------------------------------------------------

    def store(self, key: str, outcome: FilterOutcome) -> None:
        """Queue a finished filter for writing; never blocks (a full queue drops it, counted)."""
        if outcome.cached:
            return
        with self._lock:
            self._pending[key] = outcome
        try:
            self._writes.put_nowait((key, outcome))
        except queue.Full:
            with self._lock:
                self._pending.pop(key, None)
            self._fault("store", RuntimeError(f"{self._writes.maxsize} writes already queued"))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued store is written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._writes.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def clear(self) -> int:
        """Drop every entry; how many the backend held."""
        with self._lock:
            self._pending.clear()
        removed = self.backend.clear()
        self._read_volume(force=True)
        return removed

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), stop the writer, release the backend."""
        self.flush(timeout)
        self._writes.put(None)
        self._writer.join(timeout)
        self.backend.close()

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_loop(self) -> None:
        while (item := self._writes.get()) is not None:
            key, outcome = item
            try:
                if self._awake():
                    self.backend.put(key, pack(outcome))
                    self._read_volume()
            except Exception as error:
                self._fault("store", error, rest=True)
            finally:
                with self._lock:
                    if self._pending.get(key) is outcome:
                        del self._pending[key]
                self._writes.task_done()
        self._writes.task_done()

    # --- faults -------------------------------------------------------------------------

    def _awake(self) -> bool:
        return time.monotonic() >= self._resting_until

    def _fault(self, operation: str, error: BaseException, rest: bool = False) -> None:
        if self.metrics is not None:
            self.metrics.cache_errors.labels(operation).inc()
        if rest:
            self._resting_until = time.monotonic() + self.retry_seconds
        with self._lock:
            self._warn.warning(
                ("cache", operation),
                "cache %s failed on %s: %s: %s%s",
                operation,
                self.description,
                type(error).__name__,
                error,
                f"; computing without it for {self.retry_seconds:.0f} s" if rest else "",
            )

    def _forget(self, key: str) -> None:
        try:
            self.backend.delete(key)
        except Exception as error:
            self._fault("delete", error)

    def _read_volume(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.metrics is None or (
            not force and now - self._volume_read < VOLUME_INTERVAL_SECONDS
        ):
            return
        self._volume_read = now
        self.metrics.cache_bytes.set(self.backend.volume())

"""The server's view of the cache: look filters up, store finished ones, never fail a request.

A request asks which of its filters are cached (`present`: no values read),
then fetches them a few at a time as its stream sends them (`fetch`), so a
large request served from the cache holds a handful of pictures, not all.
Both block (a disk, a network): the servicer calls them in an executor with
a deadline. Every entry read is authenticated and checked in full
(entry.EntryCodec) before any of it is used. Stores are queued to one writer
thread, which encodes and writes off the engine's and the event loop's
paths; a picture waits in memory between its delivery and its write (bounded
by bytes), so a request arriving meanwhile finds it too.

Faults (Redis down, a full disk, a forged or corrupt entry) are logged
(throttled), counted in filtercast_cache_errors_total{operation}, and the
filters are computed. After a read fails, reads rest for `retry_seconds`;
after a write fails, writes do: a dead Redis costs one timeout, not one per
request, and a full disk that refuses writes still serves what it holds.
"""

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from filtercast_server.cache.backends import Backend
from filtercast_server.cache.entry import (
    CorruptEntryError,
    EntryCodec,
    Expectation,
    ForeignEntryError,
    ForgedEntryError,
    Stored,
)
from filtercast_server.jobs import FilterOutcome
from filtercast_server.observability.logs import ThrottledLog
from filtercast_server.png import png_bytes

if TYPE_CHECKING:
    from filtercast_server.observability.metrics import Metrics

log = logging.getLogger(__name__)

WRITE_QUEUE = 1024  # finished pictures waiting to be written; beyond it a store is dropped
PENDING_BYTES = 256 * 1024**2  # pixels of pictures waiting to be written, at most
VOLUME_INTERVAL_SECONDS = 1.0  # how often the bytes gauge asks the backend


class _Rest:
    """A backend direction (reads or writes) that failed waits `seconds` before trying again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = 0.0

    def start(self) -> None:
        self.until = time.monotonic() + self.seconds

    def over(self) -> bool:
        return time.monotonic() >= self.until


class ResultCache:
    """Lookups, background stores and fault accounting on one backend, under one secret."""

    def __init__(
        self,
        backend: Backend,
        secret: bytes,
        metrics: "Metrics | None" = None,
        *,
        retry_seconds: float = 5.0,
        write_queue: int = WRITE_QUEUE,
        pending_bytes: int = PENDING_BYTES,
    ) -> None:
        self.backend = backend
        self.codec = EntryCodec(secret)
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.pending_bytes = pending_bytes
        self._pending: dict[str, Stored] = {}  # delivered, not yet written
        self._pending_size = 0
        self._writes: queue.Queue[tuple[str, Stored] | None] = queue.Queue(write_queue)
        self._lock = threading.Lock()
        self._reads = _Rest(retry_seconds)
        self._stores = _Rest(retry_seconds)
        self._volume_read = 0.0
        self._warn = ThrottledLog(log)
        self._warn_lock = threading.Lock()  # not _lock: a slow log never holds up store()
        self._writer = threading.Thread(
            target=self._write_loop, name="filtercast-cache-writer", daemon=True
        )
        self._writer.start()

    @property
    def description(self) -> str:
        """Where entries live."""
        return self.backend.description

    def available(self) -> bool:
        """False while reads rest after a fault (lookups then skip the backend)."""
        return self._reads.over()

    # --- lookups ------------------------------------------------------------------------

    def present(self, keys: Mapping[int, str]) -> set[int]:
        """The filters among `keys` (filter index -> key) the cache holds. Blocking.

        A fault is a miss for every filter. Misses are counted here; hits when fetched.
        """
        with self._lock:
            found = {index for index, key in keys.items() if key in self._pending}
        wanted = {key: index for index, key in keys.items() if index not in found}
        if wanted and self.available():
            try:
                found |= {wanted[key] for key in self.backend.contains_many(wanted)}
            except Exception as error:
                self._fault("lookup", error, self._reads)
        if self.metrics is not None:
            self.metrics.cache_misses.inc(len(keys) - len(found))
        return found

    def fetch(self, keys: Mapping[int, str], expect: Expectation) -> dict[int, FilterOutcome]:
        """The cached outcomes among `keys`, checked against `expect` (its index per filter).

        Each comes marked cached with its pixels decoded. What is gone since
        `present` (evicted, expired), forged or corrupt (counted and dropped)
        or unreadable (a fault) is left out and counted a miss. Blocking.
        """
        found = self._fetch(keys, expect)
        hits = {index: stored.outcome for index, stored in found.items()}
        if self.metrics is not None:
            self.metrics.cache_hits.inc(len(hits))
            self.metrics.cache_misses.inc(len(keys) - len(hits))
        return hits

    def picture(self, key: str) -> tuple[bytes, float] | None:
        """The verified PNG stored under `key` and when its entry expires (0: never).

        None when absent, dead, forged or unreadable.
        """
        stored = self._fetch({-1: key}, Expectation()).get(-1)
        if stored is None or stored.outcome.image is None:
            return None
        png = stored.outcome.png
        return png if png is not None else png_bytes(stored.outcome.image), stored.expires

    def _fetch(self, keys: Mapping[int, str], expect: Expectation) -> dict[int, Stored]:
        found: dict[int, Stored] = {}
        with self._lock:
            for index, key in keys.items():
                if (waiting := self._pending.get(key)) is not None:
                    found[index] = waiting
        wanted = {key: index for index, key in keys.items() if index not in found}
        if not wanted or not self.available():
            return found
        try:
            blobs = self.backend.get_many(wanted)
        except Exception as error:
            self._fault("lookup", error, self._reads)
            return found
        for key, blob in blobs.items():
            index = wanted[key]
            checks = dataclasses.replace(expect, index=index) if index >= 0 else expect
            try:
                found[index] = self.codec.unpack(key, blob, checks)
            except ForeignEntryError:
                continue  # another version's layout: its own servers read it
            except CorruptEntryError as error:
                self._fault("forged" if isinstance(error, ForgedEntryError) else "corrupt", error)
                self._forget(key)
        return found

    # --- stores -------------------------------------------------------------------------

    def store(self, key: str, outcome: FilterOutcome) -> None:
        """Queue a finished filter for writing; never blocks (past a bound: dropped, counted)."""
        if outcome.cached:
            return
        ttl = self.backend.ttl
        waiting = Stored(
            dataclasses.replace(outcome, cached=True), time.time() + ttl if ttl else 0.0
        )
        size = outcome.image.nbytes if outcome.image is not None else 0
        with self._lock:
            full = self._pending_size + size > self.pending_bytes
            if not full:
                self._pending[key] = waiting
                self._pending_size += size
        if full:
            self._fault("store", RuntimeError(f"{self.pending_bytes} bytes already wait"))
            return
        try:
            self._writes.put_nowait((key, waiting))
        except queue.Full:
            self._written(key, waiting)
            self._fault("store", RuntimeError(f"{self._writes.maxsize} writes already queued"))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued store is written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._writes.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), stop the writer, release the backend."""
        self.flush(timeout)
        self._writes.put(None)
        self._writer.join(timeout)
        if not self._writer.is_alive():
            self.backend.close()

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_loop(self) -> None:
        while (item := self._writes.get()) is not None:
            key, waiting = item
            try:
                self._write(key, waiting)
            finally:
                self._written(key, waiting)
                self._writes.task_done()
        self._writes.task_done()

    def _write(self, key: str, waiting: Stored) -> None:
        if not self._stores.over():
            self._fault("store", RuntimeError("skipped: writes rest after a fault"))
            return
        try:
            blob = self.codec.pack(key, waiting.outcome, waiting.expires)
        except Exception as error:  # a picture PIL cannot encode, a NaN loss: this entry only
            self._fault("store", error)
            return
        try:
            evicted = self.backend.put(key, blob)
        except Exception as error:
            self._fault("store", error, self._stores)
            return
        if self.metrics is None:
            return
        if evicted:
            self.metrics.cache_evictions.labels("free_space").inc(evicted)
        now = time.monotonic()
        if now - self._volume_read >= VOLUME_INTERVAL_SECONDS:
            self._volume_read = now
            try:
                self.metrics.cache_bytes.set(self.backend.volume())
            except Exception as error:  # INFO refused (a managed Redis): the gauge only
                self._fault("volume", error)

    def _written(self, key: str, waiting: Stored) -> None:
        with self._lock:
            if self._pending.get(key) is waiting:
                del self._pending[key]
                image = waiting.outcome.image
                self._pending_size -= image.nbytes if image is not None else 0

    # --- faults -------------------------------------------------------------------------

    def timed_out(self, operation: str, seconds: float) -> None:
        """A lookup ran past its deadline: count it and let reads rest."""
        self._fault(operation, TimeoutError(f"no answer within {seconds:.1f} s"), self._reads)

    def _fault(self, operation: str, error: BaseException, rest: _Rest | None = None) -> None:
        if self.metrics is not None:
            self.metrics.cache_errors.labels(operation).inc()
        if rest is not None:
            rest.start()
        what = "reads" if rest is self._reads else "writes"
        with self._warn_lock:
            self._warn.warning(
                ("cache", operation),
                "cache %s failed on %s: %s: %s%s",
                operation,
                self.description,
                type(error).__name__,
                error,
                f"; {what} rest for {self.retry_seconds:.0f} s" if rest is not None else "",
            )

    def _forget(self, key: str) -> None:
        try:
            self.backend.delete(key)
        except Exception as error:
            self._fault("delete", error)

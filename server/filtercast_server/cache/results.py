"""The server's view of the cache: look filters up, store finished ones, never fail a request.

A request asks which of its filters are cached (`present`: no values read),
then fetches them a few at a time as its stream sends them (`fetch`), so a
large request served from the cache holds a handful of pictures, not all.
Both block (a disk, a network): the servicer calls them in an executor with
a deadline. Stores are queued to one writer thread, which encodes and writes
off the engine's and the event loop's paths; a picture waits in memory
between its delivery and its write (bounded by bytes), so a request arriving
meanwhile finds it too.

Faults (Redis down, a full disk, a corrupt entry) are logged (throttled),
counted in filtercast_cache_errors_total{operation}, and the filters are
computed. After a backend read or write fails, the backend rests for
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
from filtercast_server.cache.entry import CorruptEntryError, ForeignEntryError, pack, unpack
from filtercast_server.png import png_bytes
from filtercast_server.throttle import ThrottledLog
from filtercast_server.work import FilterOutcome

if TYPE_CHECKING:
    from filtercast_server.metrics import Metrics

log = logging.getLogger(__name__)

WRITE_QUEUE = 1024  # finished pictures waiting to be written; beyond it a store is dropped
PENDING_BYTES = 256 * 1024**2  # pixels of pictures waiting to be written, at most
VOLUME_INTERVAL_SECONDS = 1.0  # how often the bytes gauge asks the backend
Shape = tuple[int, int, int]


class ResultCache:
    """Lookups, background stores and fault accounting on one backend."""

    def __init__(
        self,
        backend: Backend,
        metrics: "Metrics | None" = None,
        *,
        retry_seconds: float = 5.0,
        write_queue: int = WRITE_QUEUE,
        pending_bytes: int = PENDING_BYTES,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.pending_bytes = pending_bytes
        self._pending: dict[str, FilterOutcome] = {}  # delivered, not yet written
        self._pending_size = 0
        self._writes: queue.Queue[tuple[str, FilterOutcome] | None] = queue.Queue(write_queue)
        self._lock = threading.Lock()
        self._resting_until = 0.0
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
        """False while the backend rests after a fault (lookups then skip it)."""
        return time.monotonic() >= self._resting_until

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
                self._fault("lookup", error, rest=True)
        if self.metrics is not None:
            self.metrics.cache_misses.inc(len(keys) - len(found))
        return found

    def fetch(self, keys: Mapping[int, str], shape: Shape | None) -> dict[int, FilterOutcome]:
        """The cached outcomes among `keys`, marked cached, their pictures of `shape`. Blocking.

        What is gone since `present` (evicted, expired), corrupt (counted and
        dropped) or unreadable (a fault) is left out and counted a miss.
        """
        hits = self._fetch(keys, shape)
        if self.metrics is not None:
            self.metrics.cache_hits.inc(len(hits))
            self.metrics.cache_misses.inc(len(keys) - len(hits))
        return hits

    def png(self, key: str) -> bytes | None:
        """The picture stored under `key` as PNG; None when absent, dead or unreadable."""
        outcome = self._fetch({-1: key}, None, check_index=False).get(-1)
        if outcome is None:
            return None
        if outcome.png is None and outcome.image is not None:  # still waiting to be written
            return png_bytes(outcome.image)
        return outcome.png

    def _fetch(
        self, keys: Mapping[int, str], shape: Shape | None, check_index: bool = True
    ) -> dict[int, FilterOutcome]:
        hits: dict[int, FilterOutcome] = {}
        with self._lock:
            for index, key in keys.items():
                if (outcome := self._pending.get(key)) is not None:
                    hits[index] = dataclasses.replace(outcome, cached=True)
        wanted = {key: index for index, key in keys.items() if index not in hits}
        if not wanted or not self.available():
            return hits
        try:
            found = self.backend.get_many(wanted)
        except Exception as error:
            self._fault("lookup", error, rest=True)
            return hits
        for key, blob in found.items():
            index = wanted[key]
            try:
                outcome = unpack(blob, index if check_index else None, shape)
            except ForeignEntryError:
                continue  # another version's layout: its own servers read it
            except CorruptEntryError as error:
                self._fault("corrupt", error)
                self._forget(key)
                continue
            hits[index] = outcome
        return hits

    # --- stores -------------------------------------------------------------------------

    def store(self, key: str, outcome: FilterOutcome) -> None:
        """Queue a finished filter for writing; never blocks (past a bound: dropped, counted)."""
        if outcome.cached:
            return
        size = outcome.image.nbytes if outcome.image is not None else 0
        with self._lock:
            full = self._pending_size + size > self.pending_bytes
            if not full:
                self._pending[key] = outcome
                self._pending_size += size
        if full:
            self._fault("store", RuntimeError(f"{self.pending_bytes} bytes already wait"))
            return
        try:
            self._writes.put_nowait((key, outcome))
        except queue.Full:
            self._written(key, outcome)
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
            key, outcome = item
            try:
                self._write(key, outcome)
            finally:
                self._written(key, outcome)
                self._writes.task_done()
        self._writes.task_done()

    def _write(self, key: str, outcome: FilterOutcome) -> None:
        if not self.available():
            self._fault("store", RuntimeError("skipped: the backend rests after a fault"))
            return
        try:
            blob = pack(outcome)
        except Exception as error:  # a picture PIL cannot encode: this entry only
            self._fault("store", error)
            return
        try:
            self.backend.put(key, blob)
        except Exception as error:
            self._fault("store", error, rest=True)
            return
        now = time.monotonic()
        if self.metrics is not None and now - self._volume_read >= VOLUME_INTERVAL_SECONDS:
            self._volume_read = now
            try:
                self.metrics.cache_bytes.set(self.backend.volume())
            except Exception as error:  # INFO refused (a managed Redis): the gauge only
                self._fault("volume", error)

    def _written(self, key: str, outcome: FilterOutcome) -> None:
        with self._lock:
            if self._pending.get(key) is outcome:
                del self._pending[key]
                self._pending_size -= outcome.image.nbytes if outcome.image is not None else 0

    # --- faults -------------------------------------------------------------------------

    def timed_out(self, operation: str, seconds: float) -> None:
        """A caller gave up waiting for the backend: count it and let the backend rest."""
        self._fault(operation, TimeoutError(f"no answer within {seconds:.1f} s"), rest=True)

    def _fault(self, operation: str, error: BaseException, rest: bool = False) -> None:
        if self.metrics is not None:
            self.metrics.cache_errors.labels(operation).inc()
        if rest:
            self._resting_until = time.monotonic() + self.retry_seconds
        with self._warn_lock:
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

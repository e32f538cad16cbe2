"""One request spread over every server behind an address: shards merged into one stream.

    with Client("dns:///filtercast.example:50051") as client:
        for event in client.spread(preset="robust", filters="0:512"):
            ...

The filters are dealt out round-robin (filter i to server i mod n, so costs
even out), every shard with the same seed, so each picture is the one a
single server would make. The merged stream is the single-server stream:
one Accepted (the request ids joined), each FilterImage once as it arrives
(`done` counting over the whole request), previews as they come, then one
grid, stitched here by the servers' own rule (filtercast.grid), and one
summary. A shard that fails on the way (its server gone, refusing, cut off)
is asked again, for the filters it had not delivered, on the next server
that has not failed; a filter is never asked of two servers at once, and
servers that share a result cache serve what a failed one finished. Any
other error cancels every shard and is raised. Leaving the iteration, or
cancel(), cancels every shard together.
"""

import dataclasses
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from filtercast.contract import ContractError, parse_filter_spec
from filtercast.grid import GridCollector
from filtercast_client.errors import (
    Overloaded,
    ProtocolError,
    ServerError,
    Unavailable,
)
from filtercast_client.events import Accepted, Event, FilterImage, FilterPreview, Summary
from filtercast_client.request import build_request

# What a shard's failure may be answered with another server: it is gone or cut off
# (UNAVAILABLE, a stream ended early, INTERNAL), or it is full (RESOURCE_EXHAUSTED).
RETRIED = (Unavailable, ServerError, ProtocolError, Overloaded)
SHARD_BUFFER = 32  # events a shard's reader holds before it stops reading (backpressure)
SEED_BOUND = 2**31  # a drawn seed: the same for every shard
MAX_SPREAD_FILTERS = 1 << 16  # more than any layer has; a huge range is refused, not expanded


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """A grid as the request resolved it (Accepted.params)."""

    n: int | None
    margin: int
    order: str


@dataclasses.dataclass
class _Shard:
    """The filters one server is asked for, and what it delivered of them."""

    filters: list[int]
    server: int
    delivered: set[int] = dataclasses.field(default_factory=set)
    stream: Any = None


@dataclasses.dataclass(frozen=True)
class _Ended:
    """A shard's reader stopped: after its summary (error None), or with an error."""

    shard: _Shard
    error: Exception | None


Start = Callable[[int, list[int], float | None], Any]  # (server, filters, timeout) -> a stream


class Visualizer(Protocol):
    """A client of one server (Client, asked for its shard)."""

    def visualize(self, *args: Any, **request: Any) -> Any:
        """Start a VisualizeFilters stream."""


def filters_of(spec: str | Sequence[int] | None) -> list[int]:
    """The filters of an explicit spec or list, in order: a spread must name every one."""
    if spec is None:
        raise ValueError("a spread request names its filters (e.g. --filters 0:512)")
    if not isinstance(spec, str):
        return list(dict.fromkeys(int(i) for i in spec))
    try:
        spans = parse_filter_spec(spec)
    except ContractError as error:
        raise ValueError(str(error)) from error
    if any(span.stop is None for span in spans):
        raise ValueError(
            f"filters {spec!r}: a spread request names its filters with closed "
            "ranges (e.g. 0:512), so it can deal them out"
        )
    count = sum(span.stop - span.start for span in spans if span.stop is not None)
    if count > MAX_SPREAD_FILTERS:  # counted before anything is allocated
        raise ValueError(
            f"filters {spec!r}: {count} filters; a spread takes at most {MAX_SPREAD_FILTERS}"
        )
    found: list[int] = []
    for span in spans:
        found.extend(range(span.start, span.stop or span.start))
    return list(dict.fromkeys(found))


def draw_seed() -> int:
    """A seed for a request that gave none: every shard must use the same one."""
    return secrets.randbelow(SEED_BOUND)


class SpreadVisualization:
    """The merged events of one request spread over several servers; iterate it, or cancel it."""

    def __init__(
        self,
        start: Start,
        servers: int,
        filters: list[int],
        *,
        grid: bool,
        attempts: int,
        timeout: float | None,
    ) -> None:
        if not filters:
            raise ValueError("a spread request needs at least one filter")
        self._start, self._servers, self._grid = start, servers, grid
        self._retries_left = max(0, attempts - 1)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._filters = filters
        self._events: queue.Queue[Event | _Ended] = queue.Queue(SHARD_BUFFER * servers)
        self._lock = threading.Lock()
        self._live: list[_Shard] = []
        self._failed: set[int] = set()
        self._cancelled = threading.Event()

    @classmethod
    def over(
        cls,
        servers: Sequence[Visualizer],
        filters: list[int],
        request: dict[str, Any],
        attempts: int,
        timeout: float | None,
    ) -> "SpreadVisualization":
        """`request` (visualize's arguments) over `servers`, each its own client."""
        if any(request.get(k) for k in ("objectives", "diversity", "interpolate", "image")):
            raise ValueError("spread takes a layer's filters; send objectives to one server")
        fields = {**request, "seed": request.get("seed") or draw_seed(), "grid": False}
        build_request(filters=filters, **fields)  # bad arguments: InvalidRequest now, as visualize

        def start(server: int, share: list[int], remaining: float | None) -> Any:
            return servers[server].visualize(filters=share, timeout=remaining, **fields)

        grid = bool(request.get("grid", True))
        return cls(start, len(servers), filters, grid=grid, attempts=attempts, timeout=timeout)

    def cancel(self) -> None:
        """Stop every shard; the servers drop the filters not yet computed."""
        self._cancelled.set()
        with self._lock:
            streams = [shard.stream for shard in self._live if shard.stream is not None]
        for stream in streams:
            stream.cancel()

    def __iter__(self) -> Iterator[Event]:
        shares = [self._filters[k :: self._servers] for k in range(self._servers)]
        first = [_Shard(share, server) for server, share in enumerate(shares) if share]
        merge = _Merge(self._filters, len(first), time.monotonic())
        for shard in first:
            self._launch(shard)
        try:
            while self._live_count() and not self._cancelled.is_set():
                try:
                    item = self._events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(item, _Ended):
                    self._ended(item)
                else:
                    yield from merge.take(item)
            if not self._cancelled.is_set():
                yield from merge.finish(self._grid)
        finally:
            self.cancel()

    def _live_count(self) -> int:
        with self._lock:
            return len(self._live)

    def _launch(self, shard: _Shard) -> None:
        with self._lock:
            self._live.append(shard)
        threading.Thread(target=self._read, args=(shard,), daemon=True).start()

    def _read(self, shard: _Shard) -> None:
        """Feed one shard's events to the merge; a full queue stops the reading (backpressure)."""
        error: Exception | None = None
        try:
            remaining = None if self._deadline is None else self._deadline - time.monotonic()
            shard.stream = self._start(shard.server, shard.filters, remaining)
            if self._cancelled.is_set():
                shard.stream.cancel()
            for event in shard.stream:
                if isinstance(event, FilterImage):
                    shard.delivered.add(event.index)
                self._put(event)
        except Exception as raised:  # any, so the consumer raises it and never waits on it
            error = raised
        self._put(_Ended(shard, error))

    def _put(self, item: Event | _Ended) -> None:
        """Queue `item`, unless the merged stream is cancelled (nobody reads it any more)."""
        while not self._cancelled.is_set():
            try:
                self._events.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _ended(self, ended: _Ended) -> None:
        """A shard is done: drop it, or ask another server for what it had not delivered."""
        shard, error = ended.shard, ended.error
        with self._lock:
            self._live.remove(shard)
        if error is None or self._cancelled.is_set():
            return
        self._failed.add(shard.server)
        healthy = [s for s in range(self._servers) if s not in self._failed]
        if not isinstance(error, RETRIED) or not healthy or not self._retries_left:
            raise error
        self._retries_left -= 1
        missing = [i for i in shard.filters if i not in shard.delivered]
        if missing:  # the next healthy server after the failed one, so retries spread too
            server = min(healthy, key=lambda s: (s - shard.server) % self._servers)
            self._launch(_Shard(missing, server))


class _Merge:
    """Builds the one stream a single server would have sent from the shards' events."""

    def __init__(self, filters: list[int], shards: int, started: float) -> None:
        self.filters, self.shards, self.started = filters, shards, started
        self.accepted: list[Accepted] = []
        self.held: list[Event] = []  # what came before every first shard was accepted
        self.images: dict[int, FilterImage] = {}
        self.collector: GridCollector | None = None

    def take(self, event: Event) -> Iterator[Event]:
        """The merged events that one shard's event makes: none, one, or the held ones."""
        if isinstance(event, Accepted):
            yield from self._accept(event)
            return
        if isinstance(event, FilterImage):
            if event.index in self.images:  # a retried shard's filter the first had sent
                return
            event = dataclasses.replace(event, done=len(self.images) + 1, total=len(self.filters))
            self.images[event.index] = event
        elif not isinstance(event, FilterPreview) or event.index in self.images:
            return  # a shard's own summary: the request's replaces it (shards have no grid)
        if len(self.accepted) < self.shards:
            self.held.append(event)
            return
        if isinstance(event, FilterImage) and self.collector is not None:
            self.collector.add(event)
        yield event

    def _accept(self, event: Accepted) -> Iterator[Event]:
        """Check a shard's Accepted; once every first shard's is in, the request's and the held."""
        if self.accepted and event.weights_sha256 != self.accepted[0].weights_sha256:
            raise ProtocolError(
                f"the servers hold different weights ({self.accepted[0].weights_sha256[:12]} "
                f"and {event.weights_sha256[:12]}): their pictures do not belong in one grid"
            )
        self.accepted.append(event)
        if len(self.accepted) != self.shards:
            return  # a retried shard's, or not every first shard's yet
        first = self.accepted[0]
        params = first.params
        layout = GridLayout(
            int(params.get("grid_n") or 0) or None,
            int(params.get("grid_margin", 0)),
            str(params.get("grid_order", "loss")),
        )
        self.collector = GridCollector(layout, len(self.filters))
        yield dataclasses.replace(
            first,
            request_id=",".join(a.request_id for a in self.accepted),
            filters=list(self.filters),
            cached_filters=sorted({i for a in self.accepted for i in a.cached_filters}),
        )
        held, self.held = self.held, []
        for item in held:
            if isinstance(item, FilterImage):
                self.collector.add(item)
            yield item

    def finish(self, grid: bool) -> Iterator[Event]:
        """The grid of every shard's pictures and the request's summary."""
        if self.collector is None:
            raise ProtocolError("not every server accepted the request before its end")
        if grid:
            stitched = self.collector.build()
            if stitched is not None:
                yield stitched
        images = list(self.images.values())
        dead = sum(image.dead for image in images)
        yield Summary(
            kept=len(images) - dead,
            dead=dead,
            total_seconds=time.monotonic() - self.started,
            mean_filter_seconds=sum(i.seconds for i in images) / max(1, len(images)),
            revived=sum(1 for i in images if i.revived and not i.dead),
            cached=sum(i.cached for i in images),
        )

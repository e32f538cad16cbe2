"""The result cache inside the server, on the stand-in engine (no TensorFlow): repeats
come from the cache, concurrent requests share one computation, faults never fail a
request, and the stream says which filters were cached."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from filtercast_client import Accepted, Client, FilterImage, GridImage, Summary
from filtercast_server.cache.backends import DiskBackend
from filtercast_server.jobs import FilterOutcome
from filtercast_server.serving.admission import StreamAdmission
from filtercast_server.serving.batching import SchedulerPolicy
from filtercast_server.serving.scheduler import Done, Result, Scheduler
from tests.support.cache import BrokenBackend, counter
from tests.support.plans import plan
from tests.support.standin import Engine, StandIn


def stream(server: StandIn, **request) -> list:
    with Client(server.address) as client:
        return list(
            client.visualize(**{"filters": "0:8", "size": 32, "steps": 2, "seed": 4, **request})
        )


def pictures(events: list) -> dict[int, np.ndarray | None]:
    return {e.index: e.image for e in events if isinstance(e, FilterImage)}


@pytest.fixture
def backend(tmp_path: Path) -> DiskBackend:
    return DiskBackend(tmp_path, 10 * 1024**2, None)


def test_a_repeated_request_comes_from_the_cache_with_the_same_pictures(backend) -> None:
    engine = Engine()
    with StandIn(engine=engine, cache_backend=backend) as server:
        first = stream(server)
        assert server.cache.flush()
        second = stream(server, grid_n=2)  # another grid of the same pictures
    assert engine.finished.count(0) == 1, "a cached filter was computed again"
    accepted = second[0]
    assert isinstance(accepted, Accepted) and accepted.cached_filters == list(range(8))
    results = [e for e in second if isinstance(e, FilterImage)]
    assert [r.index for r in results] == list(range(8)), "cached filters come in request order"
    assert all(r.cached and len(r.image_key) == 32 for r in results)
    assert not any(e.cached for e in first if isinstance(e, FilterImage))
    assert {k: v is None for k, v in pictures(first).items()} == {
        k: v is None for k, v in pictures(second).items()
    }
    for index, image in pictures(first).items():
        if image is not None:
            np.testing.assert_array_equal(pictures(second)[index], image)
    grid, summary = second[-2], second[-1]
    assert isinstance(grid, GridImage) and grid.n == 2
    assert isinstance(summary, Summary) and summary.cached == 8 and summary.dead == 1
    assert counter(server.metrics, "filtercast_cache_hits_total") == 8


def test_a_partly_cached_request_computes_only_the_rest(backend) -> None:
    engine = Engine()
    with StandIn(engine=engine, cache_backend=backend) as server:
        stream(server, filters="0:4")
        assert server.cache.flush()
        events = stream(server, filters="2:6")
    assert events[0].cached_filters == [2, 3]
    assert sorted(engine.finished) == [0, 1, 2, 3, 4, 5]
    assert [e.cached for e in events if isinstance(e, FilterImage)] == [True, True, False, False]


def test_other_parameters_or_seeds_are_not_served_from_the_cache(backend) -> None:
    engine = Engine()
    with StandIn(engine=engine, cache_backend=backend) as server:
        stream(server, filters="0:2")
        assert server.cache.flush()
        assert stream(server, filters="0:2", seed=5)[0].cached_filters == []
        assert stream(server, filters="0:2", steps=3)[0].cached_filters == []
        assert stream(server, filters="0:2", precision="bfloat16")[0].cached_filters == []
    assert len(engine.finished) == 8


def test_a_broken_cache_never_fails_a_request() -> None:
    engine = Engine()
    with StandIn(engine=engine, cache_backend=BrokenBackend()) as server:  # type: ignore[arg-type]
        first, second = stream(server), stream(server)
        errors = counter(server.metrics, "filtercast_cache_errors_total", operation="lookup")
    assert isinstance(first[-1], Summary) and isinstance(second[-1], Summary)
    assert second[-1].cached == 0 and len(engine.finished) == 16
    assert errors and errors >= 2


def test_concurrent_identical_requests_compute_each_filter_once(backend) -> None:
    engine = Engine(step_seconds=0.02)
    with StandIn(engine=engine, cache_backend=backend) as server:
        results: list[list] = []
        threads = [
            threading.Thread(target=lambda: results.append(stream(server, steps=4)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        shared = counter(server.metrics, "filtercast_cache_shared_total")
    assert len(results) == 3 and all(isinstance(r[-1], Summary) for r in results)
    assert sorted(engine.finished) == list(range(8)), "a filter was computed twice"
    assert shared + sum(r[-1].cached for r in results) == 16  # two requests got all 8 elsewhere


# --- the scheduler's de-duplication, step by step -------------------------------------


class Stored:
    """A result sink that notes the keys it is given."""

    def __init__(self, keys: list) -> None:
        self.keys = keys

    def store(self, key: str, outcome: FilterOutcome) -> None:
        self.keys.append(key)


def scheduler_with(engine: Engine, stored: list) -> Scheduler:
    return Scheduler(
        engine,  # type: ignore[arg-type]
        SchedulerPolicy(queue_limit=100),
        results=Stored(stored),
    )


async def results_of(scheduler: Scheduler, handle) -> list[FilterOutcome]:
    got = []
    while not isinstance(event := await asyncio.wait_for(scheduler.next_event(handle), 30), Done):
        assert isinstance(event, Result)
        got.append(event.outcome)
    return got


def test_a_follower_inherits_the_job_when_its_owner_leaves() -> None:
    engine = Engine(step_seconds=0.01)
    stored: list[str] = []
    scheduler = scheduler_with(engine, stored)
    keys = {i: f"{i:032x}" for i in range(8)}

    async def run() -> list[FilterOutcome]:
        loop = asyncio.get_running_loop()
        owner = scheduler.submit("owner", plan("l", range(8), steps=3), loop, keys=keys)
        follower = scheduler.submit("follower", plan("l", range(8), steps=3), loop, keys=keys)
        assert scheduler.queued == 8, "the follower queued jobs of its own"
        scheduler.cancel(owner)
        scheduler.start()
        return await results_of(scheduler, follower)

    try:
        got = asyncio.run(run())
    finally:
        scheduler.stop()
    assert sorted(o.index for o in got) == list(range(8))
    assert sorted(engine.finished) == list(range(8))
    assert sorted(stored) == sorted(keys.values())


def test_when_everyone_leaves_the_work_stops_and_a_newcomer_starts_afresh() -> None:
    engine = Engine(step_seconds=0.01)
    scheduler = scheduler_with(engine, [])
    keys = {i: f"{i:032x}" for i in range(4)}

    async def run() -> list[FilterOutcome]:
        loop = asyncio.get_running_loop()
        first = scheduler.submit("a", plan("l", range(4), steps=1000), loop, keys=keys)
        second = scheduler.submit("b", plan("l", range(4), steps=1000), loop, keys=keys)
        scheduler.start()
        await asyncio.sleep(0.05)  # their jobs are running (or queued: either way)
        scheduler.cancel(first)
        scheduler.cancel(second)
        late = scheduler.submit("c", plan("l", range(1), steps=1), loop, keys={0: keys[0]})
        return await results_of(scheduler, late)

    try:
        got = asyncio.run(run())
    finally:
        scheduler.stop()
    assert [o.index for o in got] == [0]
    assert engine.finished == [0], "the abandoned jobs ran on"


def test_a_slow_reader_does_not_hold_up_a_request_sharing_its_filters() -> None:
    engine = Engine(step_seconds=0.005)
    policy = SchedulerPolicy(queue_limit=100, stream_buffer=2)
    scheduler = Scheduler(engine, policy)  # type: ignore[arg-type]
    keys = {i: f"{i:032x}" for i in range(8)}

    async def run() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        slow = scheduler.submit("slow", plan("l", range(8), steps=2), loop, keys=keys)
        reader = scheduler.submit("reader", plan("l", range(8), steps=2), loop, keys=keys)
        scheduler.start()
        got = await results_of(scheduler, reader)  # the slow one has read nothing yet
        return got, await results_of(scheduler, slow)

    try:
        read, slow = asyncio.run(run())
    finally:
        scheduler.stop()
    assert sorted(o.index for o in read) == list(range(8))
    assert sorted(o.index for o in slow) == list(range(8)), "the slow reader lost filters"
    assert sorted(engine.finished) == list(range(8)), "a handed-over filter ran twice"


class Spying(DiskBackend):
    """Records how many entries each read asks for."""

    reads: list[int]

    def get_many(self, keys):
        keys = list(keys)
        self.reads.append(len(keys))
        return super().get_many(keys)


def test_cached_pictures_are_read_a_few_at_a_time(tmp_path: Path) -> None:
    from filtercast_server.serving.streams import FETCH_BATCH

    backend = Spying(tmp_path, 10 * 1024**2, None)
    backend.reads = []
    with StandIn(cache_backend=backend) as server:
        stream(server, filters="0:40")
        assert server.cache.flush()
        again = stream(server, filters="0:40")
    assert again[-1].cached == 40
    assert backend.reads and max(backend.reads) <= FETCH_BATCH


class Forgetful(DiskBackend):
    """Says it holds what it then cannot give: evicted between the two looks."""

    def get_many(self, keys):
        return {}


def test_a_picture_gone_between_lookup_and_fetch_is_computed(tmp_path: Path) -> None:
    engine = Engine()
    with StandIn(engine=engine, cache_backend=Forgetful(tmp_path, 10 * 1024**2, None)) as server:
        stream(server, filters="0:4")
        assert server.cache.flush()
        events = stream(server, filters="0:4")
    assert events[0].cached_filters == [0, 1, 2, 3]  # present when looked up
    assert isinstance(events[-1], Summary) and events[-1].cached == 0
    assert sorted(f.index for f in events if isinstance(f, FilterImage)) == [0, 1, 2, 3]
    assert sorted(engine.finished) == [0, 0, 1, 1, 2, 2, 3, 3]


class Hanging(DiskBackend):
    """A disk or a Redis that stops answering."""

    def contains_many(self, keys):
        time.sleep(3)
        return set()


def test_a_hanging_cache_costs_a_deadline_then_is_skipped(tmp_path: Path, monkeypatch) -> None:
    import filtercast_server.serving.servicer as api

    monkeypatch.setattr(api, "LOOKUP_SECONDS", 0.2)
    engine = Engine()
    hanging = Hanging(tmp_path, 10 * 1024**2, None)
    with StandIn(engine=engine, cache_backend=hanging, cache_rest_seconds=60) as server:
        first, second = stream(server, filters="0:3"), stream(server, filters="0:3")
        timeouts = counter(server.metrics, "filtercast_cache_errors_total", operation="lookup")
    assert isinstance(first[-1], Summary) and isinstance(second[-1], Summary)
    assert timeouts == 1, "the resting cache was asked again"
    assert len(engine.finished) == 6


class Slow(DiskBackend):
    """A healthy disk that takes its time: every lookup costs 0.3 s."""

    def contains_many(self, keys):
        time.sleep(0.3)
        return super().contains_many(keys)

    def get_many(self, keys):
        time.sleep(0.3)
        return super().get_many(keys)


def test_many_repeats_at_once_queue_for_lookups_without_a_fault(tmp_path: Path) -> None:
    """40 lookups of 0.3 s on 4 threads: the last waits ~3 s, past the 2 s deadline, yet
    each lookup itself is quick: load, not a fault, and nothing is computed again."""
    engine = Engine()
    slow = Slow(tmp_path, 10 * 1024**2, None)
    with StandIn(engine=engine, cache_backend=slow, admission=StreamAdmission(64, 64)) as server:
        stream(server)
        assert server.cache is not None and server.cache.flush()
        computed = len(engine.finished)
        with ThreadPoolExecutor(40) as pool:
            repeats = list(pool.map(lambda _: stream(server), range(40)))
        faults = counter(server.metrics, "filtercast_cache_errors_total", operation="lookup")
    assert faults == 0, "a slow but healthy cache was declared faulty"
    assert all(isinstance(r[-1], Summary) and r[-1].cached == 8 for r in repeats)
    assert len(engine.finished) == computed, "cached filters were computed again"

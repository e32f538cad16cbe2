"""The scheduler with a stand-in engine: failures stay in their batch, the queue is bounded."""

import asyncio
import dataclasses

import numpy as np
import pytest

from filtercast_server.ascent import FilterOutcome, Plan
from filtercast_server.devices import Precision
from filtercast_server.presets import PRESETS
from filtercast_server.scheduler import Done, Failed, QueueFullError, Result, Scheduler


class StandInEngine:
    """Finishes every job at once; raises like a device OOM for layer 'boom'."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def batch_size(self, params) -> int:
        return 4

    def run_jobs(self, params, precision, source):
        while jobs := source(4):
            self.batches.append([job.index for job in jobs])
            if params.layer == "boom":
                raise RuntimeError("OOM when allocating tensor with shape [4,128,128,64]")
            for job in jobs:
                yield (
                    job,
                    FilterOutcome(job.index, 1.0, False, np.zeros((2, 2, 3), np.uint8), 1, 0.01),
                )


def plan(layer: str, filters: range) -> Plan:
    params = dataclasses.replace(PRESETS["classic"], layer=layer)
    return Plan(params, Precision.FLOAT32, tuple(filters), seed=0)


async def drain(handle) -> list:
    events = []
    while True:
        event = await asyncio.wait_for(handle.events.get(), 10)
        events.append(event)
        if isinstance(event, Done | Failed):
            return events


def test_a_failing_batch_fails_only_its_requests_and_the_worker_goes_on() -> None:
    counted: dict[str, int] = {}
    scheduler = Scheduler(
        StandInEngine(),
        queue_limit=100,
        on_filters=lambda o, n: counted.update({o: counted.get(o, 0) + n}),
    )

    async def run():
        loop = asyncio.get_running_loop()
        bad = scheduler.submit("bad", plan("boom", range(6)), loop)
        good = scheduler.submit("good", plan("block5_conv1", range(6)), loop)
        scheduler.start()
        return await drain(bad), await drain(good)

    try:
        bad_events, good_events = asyncio.run(run())
    finally:
        scheduler.stop()
    assert isinstance(bad_events[-1], Failed)
    assert "OOM when allocating tensor" in str(bad_events[-1].error)
    assert isinstance(good_events[-1], Done)
    assert sorted(e.outcome.index for e in good_events if isinstance(e, Result)) == list(range(6))
    assert counted == {"error": 6, "ok": 6} and scheduler.queued == 0


def test_the_queue_limit_rejects_at_once_and_counts_filters() -> None:
    scheduler = Scheduler(StandInEngine(), queue_limit=10)

    async def run():
        loop = asyncio.get_running_loop()
        scheduler.submit("a", plan("block5_conv1", range(8)), loop)
        with pytest.raises(QueueFullError, match="8 filters queued, this request adds 3, limit 10"):
            scheduler.submit("b", plan("block5_conv1", range(3)), loop)
        scheduler.submit("c", plan("block5_conv1", range(2)), loop)
        assert scheduler.queued == 10

    asyncio.run(run())


def test_cancel_drops_queued_jobs() -> None:
    counted: dict[str, int] = {}
    scheduler = Scheduler(StandInEngine(), on_filters=lambda o, n: counted.update({o: n}))

    async def run():
        handle = scheduler.submit("a", plan("block5_conv1", range(9)), asyncio.get_running_loop())
        scheduler.cancel(handle)
        assert scheduler.queued == 0 and handle.cancelled

    asyncio.run(run())
    assert counted == {"cancelled": 9}


def test_rows_go_round_robin_across_requests() -> None:
    engine = StandInEngine()
    scheduler = Scheduler(engine)

    async def run():
        loop = asyncio.get_running_loop()
        first = scheduler.submit("a", plan("block5_conv1", range(0, 8)), loop)
        second = scheduler.submit("b", plan("block5_conv1", range(100, 102)), loop)
        scheduler.start()
        await drain(first)
        await drain(second)

    try:
        asyncio.run(run())
    finally:
        scheduler.stop()
    # The first batch of 4 already holds both requests' filters.
    assert engine.batches[0] == [0, 100, 1, 101]

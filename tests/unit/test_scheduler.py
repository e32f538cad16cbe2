"""The scheduler with a stand-in engine: failures stay in their batch, the queue is bounded,
batches of different keys take turns, and a stream that does not read stops getting rows."""

import asyncio
import time

import numpy as np
import pytest

from filtercast_server.jobs import FilterOutcome
from filtercast_server.serving.batching import SchedulerPolicy, Silent
from filtercast_server.serving.scheduler import Done, Failed, QueueFullError, Result, Scheduler
from tests.support.plans import grouped_plan, plan


class Counted(Silent):
    """A scheduler observer that adds up the jobs ended, by outcome."""

    def __init__(self) -> None:
        self.ended: dict[str, int] = {}

    def on_filters(self, outcome: str, count: int) -> None:
        self.ended[outcome] = self.ended.get(outcome, 0) + count


class StandInEngine:
    """Each job takes `steps` steps of `step_seconds`; raises like a device OOM for 'boom'.

    A step runs for every row of the batch at once, as the real engine's does.
    """

    def __init__(self, rows: int = 4) -> None:
        self.rows = rows
        self.batches: list[list[int]] = []
        self.steps: list[str] = []  # the layer of each step, in the order they ran

    def batch_size(self, params) -> int:
        return self.rows

    def run_jobs(self, params, precision, structure, source):
        cost = params.step_size / 1000  # seconds per step, chosen by the test
        rows: list[list] = []  # [job, steps left]
        while True:
            fresh = source(self.rows - len(rows))
            if fresh:
                self.batches.append([job.index for job in fresh])
            rows += [[job, params.steps] for job in fresh]
            if not rows:
                return
            if params.layer == "boom":
                raise RuntimeError("OOM when allocating tensor with shape [4,128,128,64]")
            time.sleep(cost)
            self.steps.append(params.layer)
            ended = []
            for row in rows:
                row[1] -= 1
                if row[1] == 0:
                    image = np.zeros((2, 2, 3), np.uint8)
                    ended.append((row[0], FilterOutcome(row[0].index, 1.0, False, image, 1, cost)))
            rows = [row for row in rows if row[1] > 0]
            yield ended


async def drain(scheduler: Scheduler, handle) -> list:
    events = []
    while True:
        event = await asyncio.wait_for(scheduler.next_event(handle), 30)
        events.append(event)
        if isinstance(event, Done | Failed):
            return events


def test_a_failing_batch_fails_only_its_requests_and_the_worker_goes_on() -> None:
    counted = Counted()
    scheduler = Scheduler(StandInEngine(), SchedulerPolicy(queue_limit=100), observer=counted)

    async def run():
        loop = asyncio.get_running_loop()
        bad = scheduler.submit("bad", plan("boom", range(6)), loop)
        good = scheduler.submit("good", plan("block5_conv1", range(6)), loop)
        scheduler.start()
        return await drain(scheduler, bad), await drain(scheduler, good)

    try:
        bad_events, good_events = asyncio.run(run())
    finally:
        scheduler.stop()
    assert isinstance(bad_events[-1], Failed)
    assert "OOM when allocating tensor" in str(bad_events[-1].error)
    assert isinstance(good_events[-1], Done)
    assert sorted(e.outcome.index for e in good_events if isinstance(e, Result)) == list(range(6))
    assert counted.ended == {"error": 6, "ok": 6} and scheduler.queued == 0


def test_the_queue_limits_reject_at_once_with_a_retry_hint() -> None:
    policy = SchedulerPolicy(queue_limit=10, client_queue_limit=6)
    scheduler = Scheduler(StandInEngine(), policy)

    async def run():
        loop = asyncio.get_running_loop()
        scheduler.submit("a", plan("block5_conv1", range(6)), loop, client="alice")
        with pytest.raises(QueueFullError, match="this client has 6 filters queued") as mine:
            scheduler.submit("b", plan("block5_conv1", range(1)), loop, client="alice")
        assert mine.value.reason == "client_queue" and mine.value.retry_after >= 1
        scheduler.submit("c", plan("block5_conv1", range(3)), loop, client="bob")
        with pytest.raises(QueueFullError, match="9 filters queued, this request adds 2, limit 10"):
            scheduler.submit("d", plan("block5_conv1", range(2)), loop, client="carol")
        scheduler.submit("e", plan("block5_conv1", range(1)), loop, client="carol")
        assert scheduler.queued == 10

    asyncio.run(run())


def test_cancel_drops_queued_jobs() -> None:
    counted = Counted()
    scheduler = Scheduler(StandInEngine(), observer=counted)

    async def run():
        handle = scheduler.submit("a", plan("block5_conv1", range(9)), asyncio.get_running_loop())
        scheduler.cancel(handle)
        assert scheduler.queued == 0 and handle.cancelled

    asyncio.run(run())
    assert counted.ended == {"cancelled": 9}


def test_rows_go_round_robin_across_requests() -> None:
    engine = StandInEngine()
    scheduler = Scheduler(engine)

    async def run():
        loop = asyncio.get_running_loop()
        first = scheduler.submit("a", plan("block5_conv1", range(0, 8)), loop)
        second = scheduler.submit("b", plan("block5_conv1", range(100, 102)), loop)
        scheduler.start()
        await drain(scheduler, first)
        await drain(scheduler, second)

    try:
        asyncio.run(run())
    finally:
        scheduler.stop()
    # The first batch of 4 already holds both requests' filters.
    assert engine.batches[0] == [0, 100, 1, 101]


def test_a_small_request_of_another_key_does_not_wait_for_a_big_one() -> None:
    engine = StandInEngine(rows=1)
    scheduler = Scheduler(engine)

    async def run():
        loop = asyncio.get_running_loop()
        # One filter of 40 steps of 50 ms, then a 2-step filter of another layer.
        big = scheduler.submit("big", plan("block5_conv1", range(1), steps=40, step_ms=50), loop)
        scheduler.start()
        while not engine.steps:
            await asyncio.sleep(0.005)
        small = scheduler.submit("small", plan("block4_conv1", range(1), steps=2), loop)
        big_steps_at_submit = engine.steps.count("block5_conv1")
        await drain(scheduler, small)
        big_steps_while_small_ran = engine.steps.count("block5_conv1") - big_steps_at_submit
        await drain(scheduler, big)
        return big_steps_while_small_ran

    try:
        big_steps = asyncio.run(run())
    finally:
        scheduler.stop()
    # Batches take turns step by step, the least-served first, a newcomer with one big step
    # of credit: the big batch finished the step in hand, then the small request ran both
    # its steps (2 allows for a slow small step on a busy machine) — not after all 40.
    assert big_steps <= 2, engine.steps
    assert engine.steps.count("block4_conv1") == 2


def test_a_stream_that_does_not_read_stops_getting_rows() -> None:
    engine = StandInEngine(rows=2)
    scheduler = Scheduler(engine, SchedulerPolicy(stream_buffer=3))

    async def run():
        loop = asyncio.get_running_loop()
        idle = scheduler.submit("idle", plan("block5_conv1", range(0, 20)), loop)
        scheduler.start()
        # Without a reader its work pauses after the buffer (3) plus a batch in flight.
        busy = scheduler.submit("busy", plan("block5_conv1", range(100, 110)), loop)
        busy_events = await drain(scheduler, busy)
        await asyncio.sleep(0.1)
        computed_while_idle = idle.buffered
        # Reading resumes it.
        idle_events = await drain(scheduler, idle)
        return computed_while_idle, busy_events, idle_events

    try:
        paused_at, busy_events, idle_events = asyncio.run(run())
    finally:
        scheduler.stop()
    assert paused_at <= 3 + 2, paused_at
    assert isinstance(busy_events[-1], Done) and len(busy_events) == 11
    assert sorted(e.outcome.index for e in idle_events if isinstance(e, Result)) == list(range(20))


def test_a_group_enters_a_batch_whole_and_never_split() -> None:
    engine = StandInEngine(rows=4)
    scheduler = Scheduler(engine)

    async def run():
        loop = asyncio.get_running_loop()
        first = scheduler.submit("a", grouped_plan("block5_conv1", 2, 3, steps=2), loop)
        second = scheduler.submit("b", grouped_plan("block5_conv1", 1, 3, steps=2), loop)
        assert first.key == second.key  # one structure: one batch
        scheduler.start()
        return [await drain(scheduler, h) for h in (first, second)]

    try:
        events = asyncio.run(run())
    finally:
        scheduler.stop()
    # 4 rows hold one group of 3 at a time: a second group waits rather than split.
    assert [len(batch) for batch in engine.batches] == [3, 3, 3]
    assert engine.batches[0] == [0, 1, 2]
    assert sum(isinstance(e, Result) for e in events[0]) == 6


def test_a_group_is_shared_whole_or_computed_whole() -> None:
    scheduler = Scheduler(StandInEngine(rows=4))
    keys = {i: f"key{i}" for i in range(3)}

    async def run():
        loop = asyncio.get_running_loop()
        group = grouped_plan("block5_conv1", 1, 3)
        owner = scheduler.submit("a", group, loop, keys=keys)
        follower = scheduler.submit("b", group, loop, keys=keys)
        assert len(follower.following) == 3 and not follower.pending
        partial = scheduler.submit("c", group, loop, keys={0: "key0", 1: "key1"})
        assert not partial.following and len(partial.pending) == 3  # one key differs: all fresh
        return owner

    owner = asyncio.run(run())
    assert len(owner.pending) == 3


def test_cancelling_a_request_drops_its_whole_group() -> None:
    counted = Counted()
    scheduler = Scheduler(StandInEngine(), observer=counted)

    async def run():
        handle = scheduler.submit("a", grouped_plan("b", 2, 4), asyncio.get_running_loop())
        scheduler.cancel(handle)
        assert scheduler.queued == 0

    asyncio.run(run())
    assert counted.ended == {"cancelled": 8}


class Background:
    """Background work of `steps` steps; each records whether a request's batch was active."""

    def __init__(self, scheduler: Scheduler, steps: int, fail_at: int = -1) -> None:
        self.scheduler = scheduler
        self.left = steps
        self.fail_at = fail_at
        self.ran: list[int] = []  # request steps the engine had run when each step ran
        self.failed: list[BaseException] = []

    def step(self) -> bool:
        if len(self.ran) == self.fail_at:
            raise RuntimeError("a broken file")
        self.ran.append(len(self.scheduler.engine.steps))
        time.sleep(0.002)
        self.left -= 1
        return self.left > 0

    def fail(self, error: BaseException) -> None:
        self.failed.append(error)


def test_background_work_runs_only_while_no_request_can() -> None:
    engine = StandInEngine()
    scheduler = Scheduler(engine, SchedulerPolicy(queue_limit=100))
    work = Background(scheduler, steps=30)

    async def run():
        loop = asyncio.get_running_loop()
        scheduler.submit_background(work)
        while len(work.ran) < 3:  # it runs at once on an idle worker
            await asyncio.sleep(0.001)
        handle = scheduler.submit("r", plan("block5_conv1", range(8), step_ms=5, steps=3), loop)
        await drain(scheduler, handle)
        return len(engine.steps)

    scheduler.start()
    try:
        request_steps = asyncio.run(run())
        deadline = time.monotonic() + 10
        while work.left and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.stop()
    assert work.left == 0 and not work.failed
    # Every step ran before the request came, or after all its steps: none in between.
    assert all(ran in (0, request_steps) for ran in work.ran), work.ran
    assert work.ran.count(request_steps) > 0


def test_failing_background_work_is_told_why_and_the_worker_goes_on() -> None:
    engine = StandInEngine()
    scheduler = Scheduler(engine, SchedulerPolicy(queue_limit=100))
    broken, fine = Background(scheduler, steps=5, fail_at=2), Background(scheduler, steps=2)
    scheduler.submit_background(broken)
    scheduler.submit_background(fine)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while fine.left and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.stop()
    assert [str(e) for e in broken.failed] == ["a broken file"] and len(broken.ran) == 2
    assert fine.left == 0 and not fine.failed


def test_background_work_is_bounded_and_fails_when_the_server_stops() -> None:
    scheduler = Scheduler(StandInEngine(), SchedulerPolicy(queue_limit=100))  # never started
    works = [Background(scheduler, steps=1) for _ in range(8)]
    for work in works:
        scheduler.submit_background(work)
    with pytest.raises(QueueFullError, match="background jobs"):
        scheduler.submit_background(Background(scheduler, steps=1))
    scheduler.stop()
    assert all("stopping" in str(work.failed[0]) for work in works)


class PreviewingEngine(StandInEngine):
    """Each job takes `steps` steps; after every step but its last, a preview of it."""

    def run_jobs(self, params, precision, structure, source):
        from filtercast_server.jobs import FilterPreview

        rows: list[list] = []  # [job, steps done]
        while True:
            rows += [[job, 0] for job in source(self.rows - len(rows))]
            if not rows:
                return
            ended = []
            for row in rows:
                row[1] += 1
                image = np.zeros((2, 2, 3), np.uint8)
                if row[1] == params.steps:
                    ended.append((row[0], FilterOutcome(row[0].index, 1.0, False, image, 1, 0)))
                else:
                    ended.append((row[0], FilterPreview(row[0].index, row[1], 0.0, image)))
            rows = [row for row in rows if row[1] < params.steps]
            yield ended


def test_previews_never_hold_back_or_crowd_out_results() -> None:
    """A request that reads nothing until the end finds every result, and few previews."""
    from filtercast_server.serving.scheduler import PREVIEWS_PER_FILTER, Preview

    scheduler = Scheduler(PreviewingEngine(rows=2), SchedulerPolicy(stream_buffer=64))

    async def run():
        loop = asyncio.get_running_loop()
        handle = scheduler.submit("r", plan("block5_conv1", range(8), steps=6), loop)
        scheduler.start()
        while handle.remaining:  # nothing read until every picture is done
            await asyncio.sleep(0.01)
        return await drain(scheduler, handle)

    try:
        events = asyncio.run(run())
    finally:
        scheduler.stop()
    results = [e for e in events if isinstance(e, Result)]
    previews = [e for e in events if isinstance(e, Preview)]
    assert sorted(r.outcome.index for r in results) == list(range(8))
    # 8 pictures x 5 previews were made; unread ones are capped, the rest dropped
    assert 0 < len(previews) <= PREVIEWS_PER_FILTER * 8 < 8 * 5

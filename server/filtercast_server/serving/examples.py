"""DatasetExamples: a dataset's index found or built, then each channel's best images, cropped.

A request lists the folder (datasets.py: bounded, hashed by content) and
looks the index of (model, layer, size, content) up: in memory, then in the
result cache's backend (cache/indexes.py: authenticated, checked in full).
Missing, it is built once, whoever asks meanwhile follows the same build:
its receptive field is measured and its function traced on a thread beside
the scheduler's worker, then it is background work on the scheduler
(indexing.py: one short batch at a time, only while no picture's batch can
run); its progress streams every half second. A finished index is kept in
memory and stored; a client that leaves does not stop a build. Then each channel's
examples are read from the folder (their bytes must still hash as listed),
cropped to the receptive field of their maximum and sent as PNG.
"""

import asyncio
import functools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.cache.indexes import IndexExpectation, IndexStore
from filtercast_server.cache.keys import index_key
from filtercast_server.datasets import Dataset, DatasetImage, Listing
from filtercast_server.errors import RefusedError
from filtercast_server.examples import (
    INDEX_DEPTH,
    ExampleIndex,
    ExamplesPlan,
    ReceptiveField,
    crops_of,
    plan_examples,
)
from filtercast_server.images import ImageError
from filtercast_server.indexing import IndexBuilder, IndexEngine, Progress, seen_image
from filtercast_server.serving.admission import StreamAdmission
from filtercast_server.serving.scheduler import Scheduler
from filtercast_server.serving.wire import encode_image, filters_of

if TYPE_CHECKING:  # it imports TensorFlow; serving only reads a model's description
    from filtercast_server.engine.models import LoadedModel
    from filtercast_server.observability.metrics import Metrics

log = logging.getLogger(__name__)

MAX_STREAMS = 16  # examples streams at once, in all
MAX_CLIENT_STREAMS = 4  # per client
MAX_BUILDS = 4  # indexes being prepared, waiting or building at once
MAX_CLIENT_BUILDS = 2  # of those, started by one client
MEMORY_INDEXES = 8  # built or loaded indexes kept in memory, the least recently used go
PROGRESS_SECONDS = 0.5
SEEN_KEPT = 64  # decoded images one request keeps while it crops (many channels share them)
Write = Callable[[pb.DatasetExamplesResponse], Awaitable[None]]


class DatasetChangedError(Exception):
    """An example's file no longer holds the bytes the index was built from (ABORTED)."""


class IndexBuildError(Exception):
    """The index could not be built (UNAVAILABLE: the server is stopping, or INTERNAL)."""


class IndexBuild:
    """An IndexBuilder as the scheduler's background work, its end an asyncio future."""

    def __init__(self, builder: IndexBuilder, loop: asyncio.AbstractEventLoop) -> None:
        self.builder = builder
        self.loop = loop
        self.result: asyncio.Future[ExampleIndex] = loop.create_future()
        self.preparing: asyncio.Task | None = None  # measuring its field, then queueing it

    def step(self) -> bool:
        """One batch (BackgroundWork); the last settles `result`."""
        if self.builder.step():
            return True
        self.loop.call_soon_threadsafe(_settle, self.result, self.builder.index(), None)
        return False

    def fail(self, error: BaseException) -> None:
        """The build stops: every waiter hears why (a refusal as itself)."""
        self.builder.cancel()
        failure = (
            error
            if isinstance(error, RefusedError)
            else IndexBuildError(f"{type(error).__name__}: {error}")
        )
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_settle, self.result, None, failure)


def _settle(future: asyncio.Future, value: object, error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


class DatasetExamples:
    """Answers DatasetExamples requests (see the module docstring)."""

    def __init__(
        self,
        models: "Mapping[str, LoadedModel]",
        datasets: Mapping[str, Mapping[str, Dataset]],
        engine: IndexEngine,
        scheduler: Scheduler,
        store: IndexStore | None,
        metrics: "Metrics | None" = None,
    ) -> None:
        self.models, self.datasets, self.engine = models, datasets, engine
        self.scheduler, self.store, self.metrics = scheduler, store, metrics
        self.admission = StreamAdmission(MAX_STREAMS, MAX_CLIENT_STREAMS, what="examples streams")
        # Pools of their own, so no job waits behind another kind: listings and crops;
        # a build's decoding ahead; stores; a new (model, layer)'s trace and field, beside
        # the scheduler's worker rather than on it.
        self._io = ThreadPoolExecutor(2, thread_name_prefix="filtercast-dataset")
        self._decode = ThreadPoolExecutor(2, thread_name_prefix="filtercast-index-decode")
        self._stores = ThreadPoolExecutor(1, thread_name_prefix="filtercast-index-store")
        self._prepare = ThreadPoolExecutor(1, thread_name_prefix="filtercast-index-prepare")
        self._builds: dict[str, IndexBuild] = {}
        self._builds_by_client: Counter[str] = Counter()
        self._memory: OrderedDict[str, ExampleIndex] = OrderedDict()
        self._closed = False

    def close(self) -> None:
        """Wait for the stores in hand (a finished index is written before the process ends)."""
        self._closed = True
        for pool in (self._prepare, self._decode, self._io):
            pool.shutdown(wait=False, cancel_futures=True)
        self._stores.shutdown(wait=True)

    def plan(self, request: pb.DatasetExamplesRequest) -> ExamplesPlan:
        """The validated request (InvalidRequestError naming the field, NOT_FOUND ones)."""
        return plan_examples(
            self.models,
            self.datasets,
            request.model,
            request.layer,
            request.dataset,
            filters_of(request),
            request.top_k if request.HasField("top_k") else None,
        )

    async def run(self, plan: ExamplesPlan, write: Write, client: str = "") -> None:
        """Progress, one ChannelExamples per channel, the summary, each through `write`.

        A build it starts counts against `client`'s (RefusedError past the bounds).
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        dataset = self.datasets[plan.model][plan.dataset]
        listing = await loop.run_in_executor(self._io, dataset.list)
        model = self.models[plan.model]
        key = index_key(
            model.cache_identity, plan.layer, plan.size, listing.content_sha256, INDEX_DEPTH
        )
        index, built = await self._index(key, plan, dataset, listing, write, client)
        seen: OrderedDict[str, np.ndarray] = OrderedDict()
        for channel in plan.channels:
            message = await loop.run_in_executor(
                self._io, self._channel, index, dataset, plan, channel, seen
            )
            await write(message)
        await write(self._summary(plan, index, not built, time.perf_counter() - started))

    async def _index(
        self,
        key: str,
        plan: ExamplesPlan,
        dataset: Dataset,
        listing: Listing,
        write: Write,
        client: str,
    ) -> tuple[ExampleIndex, bool]:
        """(the index, whether this request waited for its build), progress written meanwhile."""
        found = self._memory.get(key)
        source = "memory"
        if found is None and self.store is not None and key not in self._builds:
            source = "store"
            model = self.models[plan.model]
            expect = IndexExpectation(
                listing.content_sha256, model.layer(plan.layer).channels, INDEX_DEPTH, plan.size
            )
            found = await asyncio.get_running_loop().run_in_executor(
                self._io, self.store.load, key, expect
            )
            if found is not None and not set(found.images) <= set(listing.images):
                # Only a holder of the secret could sign it; even so, it names no file
                # outside this listing.
                log.error("a stored %s index names images its folder lacks", plan.dataset)
                self._count("failed")
                found = None
        if found is not None:
            self._count(source)
            self._remember(key, found)
            skips = sum(found.skipped.values())
            files = found.indexed + skips
            await write(Progress(pb.INDEX_STATE_READY, files, files, skips).message())
            return found, False
        build = self._builds.get(key) or self._start(key, plan, dataset, listing, client)
        while not build.result.done():
            await write(build.builder.progress.message())
            await asyncio.wait({build.result}, timeout=PROGRESS_SECONDS)
        index = build.result.result()  # IndexBuildError (QueueFullError) when it failed
        await write(build.builder.progress.message())
        return index, True

    def _start(
        self, key: str, plan: ExamplesPlan, dataset: Dataset, listing: Listing, client: str
    ) -> IndexBuild:
        """A new build of `key`: prepared, then queued on the scheduler, whoever waits for it.

        Its receptive field is measured, and its function traced, on a thread
        of its own: the scheduler's worker runs only its short batches. At most
        MAX_BUILDS build or wait at once, MAX_CLIENT_BUILDS started by one client.
        """
        self._check_room(client)
        loop = asyncio.get_running_loop()
        model = self.models[plan.model]
        builder = IndexBuilder(plan, dataset, listing, model, self.engine, self._decode)
        build = IndexBuild(builder, loop)
        self._builds[key] = build
        self._builds_by_client[client] += 1

        async def prepare_and_queue() -> None:
            try:
                field = await loop.run_in_executor(self._prepare, self._prepared, plan)
                builder.field = field
                self.scheduler.submit_background(build)  # QueueFullError when it is full
            except (Exception, asyncio.CancelledError) as error:  # cancelled: shutting down
                build.fail(error)

        build.preparing = asyncio.create_task(prepare_and_queue())
        log.info(
            "building the %s index of %s/%s: %d images",
            plan.dataset,
            plan.model,
            plan.layer,
            len(listing.images),
        )

        build.result.add_done_callback(
            functools.partial(self._finished, key, plan.dataset, client, loop)
        )
        return build

    def _check_room(self, client: str) -> None:
        """RefusedError when MAX_BUILDS are under way, or MAX_CLIENT_BUILDS of `client`'s."""
        if len(self._builds) >= MAX_BUILDS:
            raise RefusedError(
                "index_builds",
                f"{len(self._builds)} dataset indexes are being built, the most at once; "
                "retry when one has finished",
                30.0,
            )
        if self._builds_by_client[client] >= MAX_CLIENT_BUILDS:
            raise RefusedError(
                "client_index_builds",
                f"this client started {MAX_CLIENT_BUILDS} dataset indexes that are still "
                "building; ask again when one is ready",
                30.0,
            )

    def _finished(
        self,
        key: str,
        dataset: str,
        client: str,
        loop: asyncio.AbstractEventLoop,
        result: asyncio.Future,
    ) -> None:
        """A build ended: counted, remembered and stored when it succeeded."""
        del self._builds[key]
        self._builds_by_client[client] -= 1
        if self._builds_by_client[client] <= 0:
            del self._builds_by_client[client]
        self._count("failed" if result.exception() else "built")
        if result.exception() is None:
            index = result.result()
            if self.metrics is not None:
                self.metrics.index_images.labels("ranked").inc(index.indexed)
                skipped = sum(index.skipped.values())
                self.metrics.index_images.labels("skipped").inc(skipped)
            self._remember(key, index)
            log.info("built the %s index in %.1f s", dataset, index.seconds)
            if self.store is not None and not self._closed:
                loop.run_in_executor(self._stores, self.store.save, key, index)

    def _prepared(self, plan: ExamplesPlan) -> ReceptiveField:
        """The layer's receptive field, and its maxima function traced on one image."""
        model = self.models[plan.model]
        blank = np.zeros((1, plan.size, plan.size, model.channels), np.uint8)
        self.engine.maxima(plan.model, plan.layer, blank)
        return self.engine.receptive_field(plan.model, plan.layer, plan.size)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.index_builds.labels(outcome).inc()

    def _remember(self, key: str, index: ExampleIndex) -> None:
        self._memory[key] = index
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_INDEXES:
            self._memory.popitem(last=False)

    def _channel(
        self,
        index: ExampleIndex,
        dataset: Dataset,
        plan: ExamplesPlan,
        channel: int,
        seen: OrderedDict[str, np.ndarray],
    ) -> pb.DatasetExamplesResponse:
        """One channel's message: each example read, checked, cropped and encoded (blocking)."""
        channels = self.models[plan.model].channels

        def seen_of(image: DatasetImage) -> np.ndarray:
            pixels = seen.get(image.name)
            if pixels is None:
                try:
                    pixels = seen_image(dataset.read(image), image.name, plan.size, channels)
                except (OSError, ImageError) as error:
                    raise DatasetChangedError(str(error)) from error
                seen[image.name] = pixels
                if len(seen) > SEEN_KEPT:
                    seen.popitem(last=False)
            return pixels

        examples = [
            pb.DatasetExample(
                image=crop.image.name,
                image_sha256=crop.image.sha256,
                value=crop.value,
                position=pb.Position(y=crop.position[0], x=crop.position[1]),
                box=pb.CropBox(
                    top=crop.box[0], left=crop.box[1], height=crop.box[2], width=crop.box[3]
                ),
                crop=encode_image(crop.pixels, pb.IMAGE_FORMAT_PNG),
            )
            for crop in crops_of(index, channel, plan.top_k, seen_of)
        ]
        return pb.DatasetExamplesResponse(
            channel=pb.ChannelExamples(channel=channel, examples=examples)
        )

    def _summary(
        self, plan: ExamplesPlan, index: ExampleIndex, from_store: bool, seconds: float
    ) -> pb.DatasetExamplesResponse:
        return pb.DatasetExamplesResponse(
            summary=pb.ExamplesSummary(
                model=plan.model,
                layer=plan.layer,
                dataset=plan.dataset,
                content_sha256=index.content_sha256,
                images=index.indexed,
                skipped=dict(index.skipped),
                size=index.size,
                map_height=index.map_shape[0],
                map_width=index.map_shape[1],
                receptive_field=index.field.size,
                from_store=from_store,
                index_seconds=index.seconds,
                total_seconds=seconds,
            )
        )

"""A dataset's index being built, one batch a step: on the server's worker, or in a render.

An `IndexBuilder` ranks a folder's listing for one (model, layer, size): its
images are read, checked and decoded two batches ahead on a thread pool (a
file that fails is skipped and counted: undecodable, or changed since it was
listed), each step sends one batch through the network (`IndexEngine.maxima`:
every channel's maximum and where it is, the maps never leave the device)
and merges it into the running top-k. Batches are sized to take about
`BATCH_SECONDS` on the device, and a step waits for decoding no longer than
that, which bounds how long a picture's request waits behind one on the
server. Its progress is plain numbers another thread
may read. TF-free: the network is the engine's, behind `IndexEngine`.
"""

import time
from collections import Counter, deque
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.datasets import Dataset, DatasetImage, Listing
from filtercast_server.examples import ExampleIndex, ExamplesPlan, ReceptiveField, TopExamples
from filtercast_server.images import decode_image, square_view, to_channels

if TYPE_CHECKING:  # it imports TensorFlow; a builder only reads a model's description
    from filtercast_server.engine.models import LoadedModel

BATCH_SECONDS = 0.5  # an index batch's device time, about: what a picture's request may wait
MAX_BATCH = 32


class IndexEngine(Protocol):
    """What a build asks of the engine (engine.analysis.LayerMaps)."""

    def maxima(
        self, model: str, layer: str, images: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(B, C) maxima over positions, their flat positions, and the map's shape."""
        ...

    def receptive_field(self, model: str, layer: str, size: int) -> ReceptiveField:
        """Which input pixels a position of `layer` sees."""
        ...


def seen_image(data: bytes, name: str, size: int, channels: int) -> np.ndarray:
    """A dataset file as the network sees it: checked, decoded, centre square (ImageError)."""
    decoded = decode_image(data, name, shrink_to=size)
    return to_channels(square_view(decoded.pixels, size), channels)


@dataclass
class Progress:
    """Where a build stands (read by the event loop, written by the worker: plain ints)."""

    state: int
    done: int
    total: int
    skipped: int

    def message(self) -> pb.DatasetExamplesResponse:
        """As the stream's event."""
        return pb.DatasetExamplesResponse(
            progress=pb.IndexProgress(
                state=self.state,  # type: ignore[arg-type]
                images_done=self.done,
                images_total=self.total,
                skipped=self.skipped,
            )
        )


class IndexBuilder:
    """One index being built, a batch per `step` (the server's worker, or a local render)."""

    def __init__(
        self,
        plan: ExamplesPlan,
        dataset: Dataset,
        listing: Listing,
        model: "LoadedModel",
        engine: IndexEngine,
        decoder: Executor,
    ) -> None:
        """A build; its receptive field (`field`) is measured before the first step."""
        self.plan, self.dataset, self.listing = plan, dataset, listing
        self.channels = model.channels
        self.map_shape = model.output_size(plan.layer, plan.size)
        self.engine, self.decoder = engine, decoder
        self.top = TopExamples(model.layer(plan.layer).channels)
        self.skipped: Counter[str] = Counter(listing.skipped)
        listed_skips = sum(listing.skipped.values())
        self.progress = Progress(
            pb.INDEX_STATE_QUEUED, listed_skips, len(listing.images) + listed_skips, listed_skips
        )
        self.batch = 1
        self._next = 0  # the next image to decode
        self._decoding: deque[tuple[int, Future[np.ndarray]]] = deque()
        self.field: ReceptiveField | None = None
        self._started = 0.0
        self.indexed = 0

    def _decode(self, image: DatasetImage) -> np.ndarray:
        data = self.dataset.read(image)  # OSError when it changed since the listing
        return seen_image(data, image.name, self.plan.size, self.channels)

    def _prefetch(self) -> None:
        """Keep two batches decoding ahead of the device."""
        images = self.listing.images
        while self._next < len(images) and len(self._decoding) < 2 * self.batch:
            future = self.decoder.submit(self._decode, images[self._next])
            self._decoding.append((self._next, future))
            self._next += 1

    def step(self) -> bool:
        """One batch through the network; False once every image is ranked.

        It waits for decoding at most BATCH_SECONDS, for the next image only,
        and takes the images decoded by then (in order): on the server's
        worker, slow files cost a picture's request no more than a short step.
        """
        if self.progress.state == pb.INDEX_STATE_QUEUED:
            self._started = time.perf_counter()
            self.progress.state = pb.INDEX_STATE_BUILDING
        self._prefetch()
        if self._decoding:
            wait([self._decoding[0][1]], timeout=BATCH_SECONDS)
        numbers: list[int] = []
        pixels: list[np.ndarray] = []
        while self._decoding and len(numbers) < self.batch and self._decoding[0][1].done():
            number, future = self._decoding.popleft()
            try:
                pixels.append(future.result())
                numbers.append(number)
            except OSError:  # changed, gone or swapped since the listing
                self.skipped["changed"] += 1
            except Exception:  # ImageError, or whatever else a hostile file makes Pillow raise
                self.skipped["undecodable"] += 1
        if pixels:
            started = time.perf_counter()
            values, positions, _ = self.engine.maxima(
                self.plan.model, self.plan.layer, np.stack(pixels)
            )
            self._size_batches(time.perf_counter() - started, len(pixels))
            self.top.add(numbers, values, positions)
            self.indexed += len(pixels)
        self.progress.done = self._next - len(self._decoding) + sum(self.listing.skipped.values())
        self.progress.skipped = sum(self.skipped.values())
        if self._decoding or self._next < len(self.listing.images):
            return True
        self.progress.state = pb.INDEX_STATE_READY
        return False

    def _size_batches(self, seconds: float, rows: int) -> None:
        """The next batches take about BATCH_SECONDS: doubled when fast, halved when slow."""
        if seconds < BATCH_SECONDS / 2 and rows == self.batch:
            self.batch = min(MAX_BATCH, self.batch * 2)
        elif seconds > BATCH_SECONDS * 2 and self.batch > 1:
            self.batch //= 2

    def index(self) -> ExampleIndex:
        """The finished index (after the last step)."""
        assert self.field is not None and self.progress.state == pb.INDEX_STATE_READY
        return ExampleIndex.of(
            self.top,
            self.listing.images,
            self.map_shape,
            self.plan.size,
            self.field,
            self.indexed,
            self.skipped,
            self.listing.content_sha256,
            time.perf_counter() - self._started,
        )

    def cancel(self) -> None:
        """Stop decoding ahead: the build will not go on."""
        for _, future in self._decoding:
            future.cancel()


def build_index(builder: IndexBuilder) -> ExampleIndex:
    """Every step of `builder` in a row (no scheduler: a local render), its index."""
    if builder.field is None:
        plan = builder.plan
        builder.field = builder.engine.receptive_field(plan.model, plan.layer, plan.size)
    while builder.step():
        pass
    return builder.index()

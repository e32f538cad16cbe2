"""Dataset examples: an index build against the bare forward pass, and pictures while it builds.

On real ImageNet VGG16 (random weights without the file) at `--layer`, a
folder of `--images` JPEGs (random crops and flips of scikit-image's
photographs). Both parts run side by side in one process:

1. Throughput: a whole DatasetExamples request that builds the index (files
   read, checked, decoded, the batches on the scheduler's worker, the top-k
   merged) against the bare forward pass (`LayerMaps.maxima`) over the same
   images, already decoded, in the very batch sizes the build chose.
2. Time to first picture of an interactive request (the classic preset,
   `--filters` filters) on an idle scheduler, and while an index builds.

With `--figure PATH` it also draws, for a few channels, the robust picture
beside the channel's best crops among every photograph scikit-image bundles.

    .venv/bin/python bench/examples_bench.py [--weights PATH] [--images 48]
        [--layer block5_conv1] [--filters 4] [--repeats 3] [--figure docs/quality/examples.png]
"""

import argparse
import asyncio
import io
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from PIL import Image
from skimage import data as photographs

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.datasets import Dataset
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.examples import plan_examples
from filtercast_server.indexing import seen_image
from filtercast_server.planning import make_plan
from filtercast_server.serving.batching import Result
from filtercast_server.serving.examples import DatasetExamples
from filtercast_server.serving.scheduler import Scheduler

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
BUNDLED = (  # every photograph scikit-image ships without a download
    *PHOTOS,
    *("brick", "camera", "clock", "coins", "colorwheel", "grass", "gravel", "horse"),
    *("logo", "moon", "page", "text", "retina", "cell"),
)


def make_folder(root: Path, count: int) -> Path:
    """`count` JPEGs: random crops (at least 60% of each side) and flips of the photographs."""
    rng = np.random.default_rng(0)
    for n in range(count):
        photo = getattr(photographs, PHOTOS[n % len(PHOTOS)])()
        height, width = photo.shape[:2]
        h, w = int(height * rng.uniform(0.6, 1)), int(width * rng.uniform(0.6, 1))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = photo[y : y + h, x : x + w]
        Image.fromarray(crop[:, ::-1] if n % 2 else crop).save(root / f"{n:04d}.jpg", quality=90)
    return root


class Recorded:
    """LayerMaps, recording the batch sizes a build sends (the blank warm-up left out)."""

    def __init__(self, maps: LayerMaps) -> None:
        self.maps = maps
        self.batches: list[int] = []

    def maxima(self, model: str, layer: str, images: np.ndarray):  # type: ignore[no-untyped-def]
        """LayerMaps.maxima, its batch size noted."""
        if images.any():
            self.batches.append(len(images))
        return self.maps.maxima(model, layer, images)

    def receptive_field(self, model: str, layer: str, size: int):  # type: ignore[no-untyped-def]
        """LayerMaps.receptive_field."""
        return self.maps.receptive_field(model, layer, size)


async def build_index(service: DatasetExamples, plan) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds of the whole request, the build's own seconds) of one request that builds."""
    summary: list[pb.ExamplesSummary] = []

    async def write(message: pb.DatasetExamplesResponse) -> None:
        if message.WhichOneof("event") == "summary":
            summary.append(message.summary)

    started = time.perf_counter()
    await service.run(plan, write)
    return time.perf_counter() - started, summary[0].index_seconds


async def first_picture(scheduler: Scheduler, plan) -> float:  # type: ignore[no-untyped-def]
    """Seconds from submitting `plan` to its first finished picture (the rest are cancelled)."""
    started = time.perf_counter()
    handle = scheduler.submit(f"bench-{started}", plan, asyncio.get_running_loop())
    while not isinstance(await scheduler.next_event(handle), Result):
        pass
    seconds = time.perf_counter() - started
    scheduler.cancel(handle)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--layer", default="block5_conv1")
    parser.add_argument("--filters", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--figure", type=Path, help="Also draw pictures beside their examples.")
    args = parser.parse_args()
    weights = args.weights if Path(args.weights).is_file() else "random"
    models = {"vgg16": LoadedModel("vgg16", weights, select_device("auto"))}
    print(f"device: {models['vgg16'].device.description}; weights: {Path(weights).name}")
    with TemporaryDirectory() as folder:
        asyncio.run(compare(models, make_folder(Path(folder), args.images), args))
    if args.figure:
        with TemporaryDirectory() as folder:
            draw_figure(models, Path(folder), args.layer, args.figure)


def draw_figure(models, folder: Path, layer: str, out: Path, rows: int = 4) -> None:  # type: ignore[no-untyped-def]
    """Rows of: the robust picture of a channel, then its five best crops (128 px each)."""
    for name in BUNDLED:
        pixels = np.asarray(getattr(photographs, name)())
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}.png")
    datasets = {"vgg16": {"photos": Dataset("photos", folder)}}
    scheduler = Scheduler(AscentEngine(models))
    service = DatasetExamples(models, datasets, LayerMaps(models), scheduler, None)
    # The channels whose best example fires most: the clearest rows.
    wide = plan_examples(models, datasets, "vgg16", layer, "photos", "0:512", 5)
    messages: list[pb.DatasetExamplesResponse] = []

    async def write(message: pb.DatasetExamplesResponse) -> None:
        messages.append(message)

    scheduler.start()
    try:
        asyncio.run(service.run(wide, write))
    finally:
        scheduler.stop()
        service.close()
    found = [m.channel for m in messages if m.WhichOneof("event") == "channel"]
    chosen = sorted(found, key=lambda c: -c.examples[0].value)[: rows * 8 : 8][:rows]
    plan = make_plan(
        models, preset="robust", overrides={"layer": layer}, filters=[c.channel for c in chosen]
    )
    pictures = {o.index: o.image for o in AscentEngine(models).run(plan)}
    side, gap = 128, 4
    canvas = np.full((rows * (side + gap) - gap, 6 * (side + gap) + gap, 3), 255, np.uint8)
    for row, channel in enumerate(chosen):
        top = row * (side + gap)
        picture = Image.fromarray(pictures[channel.channel]).resize((side, side))
        canvas[top : top + side, :side] = np.asarray(picture)
        for column, example in enumerate(channel.examples[:5]):
            crop = Image.open(io.BytesIO(example.crop.data)).convert("RGB").resize((side, side))
            left = (column + 1) * (side + gap) + gap
            canvas[top : top + side, left : left + side] = np.asarray(crop)
        print(f"channel {channel.channel}: " + ", ".join(e.image for e in channel.examples))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(out)
    print(f"wrote {out}: per row, the robust picture, then the channel's best five crops")


async def compare(models, folder: Path, args) -> None:  # type: ignore[no-untyped-def]
    maps = LayerMaps(models)
    recorded = Recorded(maps)
    scheduler = Scheduler(AscentEngine(models))
    scheduler.start()
    try:
        datasets = {"vgg16": {"bench": Dataset("bench", folder)}}
        plan = plan_examples(models, datasets, "vgg16", args.layer, "bench", [0], 1)
        service = DatasetExamples(models, datasets, recorded, scheduler, None)
        request_seconds, build_seconds = await build_index(service, plan)
        listing = Dataset("bench", folder).list()
        seen = [
            seen_image(folder.joinpath(i.name).read_bytes(), i.name, 224, 3) for i in listing.images
        ]
        bare = []
        for _ in range(args.repeats):
            started, at = time.perf_counter(), 0
            for size in recorded.batches:
                maps.maxima("vgg16", args.layer, np.stack(seen[at : at + size]))
                at += size
            bare.append(time.perf_counter() - started)
        forward = min(bare)
        print(
            f"\n{args.images} images, {args.layer}, batches {recorded.batches}:\n"
            f"  bare forward pass   {forward:6.2f} s  {args.images / forward:6.2f} images/s\n"
            f"  index build         {build_seconds:6.2f} s  {args.images / build_seconds:6.2f} "
            f"images/s  ({forward / build_seconds:.2f} of the bare throughput)\n"
            f"  whole request       {request_seconds:6.2f} s (with listing, trace, field, crops)"
        )
        await pictures_while_building(models, scheduler, service, folder, args)
    finally:
        scheduler.stop()
        service.close()


async def pictures_while_building(models, scheduler, service, folder, args) -> None:  # type: ignore[no-untyped-def]
    """Time to first picture alone, then while another layer's index builds (repeats each)."""

    def classic(seed: int):  # type: ignore[no-untyped-def]
        return make_plan(models, preset="classic", filters=f"0:{args.filters}", seed=seed)

    await first_picture(scheduler, classic(999))  # traced once, outside the timing
    alone = [await first_picture(scheduler, classic(seed)) for seed in range(args.repeats)]
    datasets = {"vgg16": {"bench": Dataset("bench", folder)}}
    other = "block4_conv3" if args.layer != "block4_conv3" else "block5_conv1"
    plan = plan_examples(models, datasets, "vgg16", other, "bench", [0], 1)
    build = asyncio.ensure_future(build_index(service, plan))
    while not service._builds or not any(
        b.builder.progress.state == pb.INDEX_STATE_BUILDING for b in service._builds.values()
    ):
        await asyncio.sleep(0.05)
    during = []
    for seed in range(args.repeats):
        if build.done():
            break
        during.append(await first_picture(scheduler, classic(100 + seed)))
    await build
    print(
        f"\nclassic, {args.filters} filters, time to first picture (median of {len(alone)}):\n"
        f"  idle scheduler           {statistics.median(alone):6.2f} s\n"
        f"  while {other} indexes  {statistics.median(during):6.2f} s "
        f"({statistics.median(during) / statistics.median(alone):.2f}x, {len(during)} runs)"
    )


if __name__ == "__main__":
    main()

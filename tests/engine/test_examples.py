"""Dataset examples on real VGG16 weights and scikit-image's photographs, against Keras directly."""

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.datasets import Dataset
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import keras
from filtercast_server.examples import plan_examples
from filtercast_server.images import ImageError, decode_image, square_view
from filtercast_server.serving.examples import DatasetExamples
from filtercast_server.serving.scheduler import Scheduler
from tests.support.engine import CPU
from tests.unit.test_scheduler import StandInEngine

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")
LAYER = "block4_conv3"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")


@pytest.fixture(scope="module")
def vgg(vgg16_weights) -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", str(vgg16_weights), CPU)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The photographs as JPEG, two drawn pictures as PNG, and a JPEG cut short."""
    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        Image.fromarray(getattr(skimage_data, name)()).save(root / f"{name}.jpg", quality=92)
    stripes = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(stripes)
    for x in range(0, 256, 16):
        draw.rectangle((x, 0, x + 7, 255), fill=(200, 30, 30))
    (root / "drawn").mkdir()
    stripes.save(root / "drawn" / "stripes.png")
    circles = Image.new("RGB", (300, 200), (20, 20, 80))
    draw = ImageDraw.Draw(circles)
    for r in range(10, 100, 12):
        draw.ellipse((150 - r, 100 - r, 150 + r, 100 + r), outline=(250, 250, 0), width=3)
    circles.save(root / "drawn" / "circles.png")
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.coffee()).save(buffer, format="JPEG")
    (root / "cut.jpg").write_bytes(buffer.getvalue()[:3000])
    return root


def examples_of(vgg, folder: Path, channels: list[int], top_k: int) -> list:
    """Every event of one DatasetExamples request, built on a real scheduler's worker."""
    datasets = {"vgg16": {"photos": Dataset("photos", folder)}}
    scheduler = Scheduler(StandInEngine())
    service = DatasetExamples(vgg, datasets, LayerMaps(vgg), scheduler, None)
    plan = plan_examples(vgg, datasets, "vgg16", LAYER, "photos", channels, top_k)
    events: list = []

    async def write(message: pb.DatasetExamplesResponse) -> None:
        events.append(message)

    scheduler.start()
    try:
        asyncio.run(service.run(plan, write))
    finally:
        scheduler.stop()
        service.close()
    return events


def test_the_examples_are_a_brute_force_ranking_by_keras_itself(vgg16_weights, vgg, folder) -> None:
    full = keras.applications.VGG16(include_top=False, weights=str(vgg16_weights))
    direct = keras.Model(full.input, full.get_layer(LAYER).output)
    maxima, peaks = {}, {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png")):
        try:  # what the network is shown is the checked door's (a JPEG decoded at draft scale)
            pixels = decode_image(path.read_bytes(), shrink_to=224).pixels
        except ImageError:
            continue  # the cut JPEG: skipped by the index too
        seen = square_view(pixels, 224).astype(np.float32)
        maps = direct(tf.constant(keras.applications.vgg16.preprocess_input(seen[None])))[0]
        flat = maps.numpy().reshape(-1, maps.shape[-1])
        name = path.relative_to(folder).as_posix()
        maxima[name], peaks[name] = flat.max(axis=0), flat.argmax(axis=0)
    channels = [0, 7, 100, 255, 511]
    events = examples_of(vgg, folder, channels, top_k=5)
    summary = events[-1].summary
    assert summary.images == len(maxima) == 8 and dict(summary.skipped) == {"undecodable": 1}
    answered = [e.channel for e in events if e.WhichOneof("event") == "channel"]
    assert [c.channel for c in answered] == channels
    for channel in answered:
        ranked = sorted(maxima, key=lambda n: (-maxima[n][channel.channel], n))[:5]
        assert [e.image for e in channel.examples] == ranked
        for example in channel.examples:
            expected = maxima[example.image][channel.channel]
            assert example.value == pytest.approx(float(expected), rel=1e-4, abs=1e-3)
            if expected > 0:  # a channel at 0 everywhere has no one peak
                peak = int(peaks[example.image][channel.channel])
                assert (example.position.y, example.position.x) == divmod(peak, 28)
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    assert progress[-1].state == pb.INDEX_STATE_READY and progress[-1].images_done == 9


def vgg_field(model: keras.Model, layer: str) -> tuple[int, int, int]:
    """(size, stride, offset) of a layer's field by the textbook recurrence over VGG's chain."""
    size, stride, offset = 1, 1, 0
    for each in model.layers[1:]:
        if isinstance(each, keras.layers.Conv2D):  # 3x3, same padding
            k = each.kernel_size[0]
            size, offset = size + (k - 1) * stride, offset - (k - 1) // 2 * stride
        elif isinstance(each, keras.layers.MaxPooling2D):  # 2x2, stride 2
            size, stride = size + stride, stride * 2
        if each.name == layer:
            return size, stride, offset
    raise AssertionError(layer)


@pytest.mark.parametrize("layer", ["block1_conv1", "block2_conv2", "block3_conv3", "block5_conv1"])
def test_the_measured_receptive_field_is_the_textbook_one(vgg, layer) -> None:
    field = LayerMaps(vgg).receptive_field("vgg16", layer, 224)
    architecture = keras.applications.VGG16(include_top=False, weights=None)
    assert (field.size, field.stride, field.offset) == vgg_field(architecture, layer)

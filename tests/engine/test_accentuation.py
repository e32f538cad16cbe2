"""Accentuation in the real engine: start from the photo, stay near it, raise the objective."""

import io

import numpy as np
import pytest
from PIL import Image

from filtercast_server.accentuation import Accentuate
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.fourier import FourierAscent, spectrum_of
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.pixels import start_pixels, start_units
from filtercast_server.images import square_view
from filtercast_server.planning import make_plan
from filtercast_server.presets import CATALOG
from tests.support.engine import CPU, run

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")
metrics = pytest.importorskip("skimage.metrics", reason="scikit-image measures SSIM")

CHELSEA = skimage_data.chelsea()


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(metrics.structural_similarity(a, b, channel_axis=2, data_range=255))


@pytest.fixture(scope="module")
def vgg() -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", "random", CPU, seed=1)}


def test_the_spectrum_of_an_image_gives_the_image_back() -> None:
    params = CATALOG["robust"].params
    ascent = FourierAscent(params, step=None, channels=3, loss=None)  # type: ignore[arg-type]
    for photo in (CHELSEA, skimage_data.coffee(), np.zeros((64, 64, 3), np.uint8)):
        image = square_view(photo, 64)
        back = ascent.pictures((spectrum_of(image / np.float32(255), 3)[None],))[0]
        assert np.abs(back.astype(int) - image).max() <= 1
    gray = square_view(CHELSEA, 32).mean(axis=2, keepdims=True).astype(np.uint8)
    back = FourierAscent(params, None, 1, None).pictures(  # type: ignore[arg-type]
        (spectrum_of(gray / np.float32(255), 1)[None],)
    )[0]
    assert np.abs(back.astype(int) - gray).max() <= 1


@pytest.mark.parametrize(
    ("preset", "std", "expected"),
    [
        ("classic", 1.0, (128.0, 255.0)),  # raw caffe VGG16: 0..255 around the seeds' start
        ("keras_io", 127.5, (0.0, 2.0)),  # raw tf ResNet50V2: -1..1
        ("robust", 1.0, (127.5, 255.0)),  # the model's own preprocessing takes 0..255
    ],
)
def test_a_start_image_is_in_the_units_the_network_was_trained_on(preset, std, expected) -> None:
    units = start_units(CATALOG[preset].params, std)
    assert units == expected
    offset, span = units
    corners = start_pixels(np.array([0.0, 0.5, 1.0], np.float32), units)
    np.testing.assert_allclose(corners, [offset - span / 2, offset, offset + span / 2])


def accentuated(models, preset, pull, space="pixels", filters="0:3", **overrides):
    plan = make_plan(
        models,
        preset=preset,
        overrides=overrides,
        filters=filters,
        precision="float32",
        seed=2,
        accentuate=Accentuate(jpeg(CHELSEA), pull, space),
    )
    return plan, run(models, plan)


@pytest.mark.parametrize(
    ("preset", "space", "overrides", "closer"),
    [
        # classic's step has a fixed length (the L2-normalised gradient): the pull only turns it
        ("classic", "pixels", {"size": 64, "steps": 20}, 0.95),
        ("robust", "pixels", {"size": 32, "steps": 12, "pad": 4, "jitter": 2}, 0.5),
        ("robust", "features", {"size": 32, "steps": 12, "pad": 4, "jitter": 2}, 0.5),
    ],
)
def test_the_stronger_the_pull_the_closer_the_picture_stays(
    vgg, preset, space, overrides, closer
) -> None:
    free_plan, free = accentuated(vgg, preset, 0.0, space, **overrides)
    pulled_plan, pulled = accentuated(vgg, preset, 1000.0, space, **overrides)
    assert free_plan.structure.pull is None and pulled_plan.structure.pull == space
    start = free_plan.start.pixels  # type: ignore[union-attr]
    for index, outcome in pulled.items():
        distances = [np.mean((o.image.astype(float) - start) ** 2) for o in (free[index], outcome)]
        assert distances[1] < closer * distances[0], (index, distances)
        assert ssim(outcome.image, start) > ssim(free[index].image, start), index


def test_one_step_from_the_photo_is_still_the_photo(vgg) -> None:
    for preset in ("classic", "robust"):
        plan, outcomes = accentuated(vgg, preset, 0.0, size=32, steps=1)
        start = plan.start.pixels  # type: ignore[union-attr]
        for outcome in outcomes.values():  # classic deprocesses: the contrast is the seeds'
            correlation = np.corrcoef(outcome.image.ravel(), start.ravel())[0, 1]
            assert correlation > 0.95, preset


@pytest.fixture(scope="module")
def real_vgg(vgg16_weights) -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", str(vgg16_weights), select_device("auto"))}


# block5_conv1 channels on chelsea at 128 px: the photo's strongest, and one at its median.
CHANNELS = {178: "the strongest", 461: "the median"}


def test_accentuation_doubles_the_objective_and_keeps_the_photo(real_vgg) -> None:
    """robust, default pull: at least 2x the channel's mean, SSIM at least 0.5 to the start."""
    plan = make_plan(
        real_vgg,
        preset="robust",
        filters=",".join(map(str, CHANNELS)),
        seed=0,
        accentuate=Accentuate(jpeg(CHELSEA)),
    )
    outcomes = AscentEngine(real_vgg).run(plan)
    start = plan.start.pixels  # type: ignore[union-attr]
    maps = LayerMaps(real_vgg)
    before = maps("vgg16", "block5_conv1", start).mean(axis=(0, 1))
    for outcome in outcomes:
        after = maps("vgg16", "block5_conv1", outcome.image).mean(axis=(0, 1))
        channel = outcome.index
        assert after[channel] >= 2 * before[channel], (CHANNELS[channel], before, after)
        assert ssim(outcome.image, start) >= 0.5, CHANNELS[channel]

"""AnalyzeImage on real photographs (scikit-image's) against TensorFlow computed directly."""

import numpy as np
import pytest
import tensorflow as tf

from filtercast_server.analysis import AnalysisPlan, heatmap, plan_analysis, rank_channels
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import keras
from filtercast_server.errors import InvalidRequestError
from filtercast_server.images import square_view
from filtercast_server.params import Limits
from tests.support.engine import CPU

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")
LAYER = "block4_conv3"


@pytest.fixture(scope="module")
def vgg(vgg16_weights) -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", str(vgg16_weights), CPU)}


@pytest.fixture(scope="module")
def direct(vgg16_weights) -> keras.Model:
    """VGG16 cut at LAYER, built straight from Keras with its own caffe preprocessing."""
    full = keras.applications.VGG16(include_top=False, weights=str(vgg16_weights))
    return keras.Model(full.input, full.get_layer(LAYER).output)


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee"])
def test_the_maps_and_top_channels_are_tensorflows_own(vgg, direct, photo) -> None:
    seen = square_view(getattr(skimage_data, photo)(), 96)
    maps = LayerMaps(vgg)("vgg16", LAYER, seen)
    batch = keras.applications.vgg16.preprocess_input(seen[None].astype(np.float32))
    expected = direct(tf.constant(batch), training=False).numpy()[0]
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-3)
    plan = AnalysisPlan("vgg16", LAYER, 96, 5, (3,), False)
    total, top, named = rank_channels(maps, plan)
    means = expected.mean(axis=(0, 1))
    assert [s.channel for s in top] == list(np.argsort(-means, kind="stable")[:5])
    assert total == pytest.approx(float(means.sum()), rel=1e-5)
    assert top[0].share == pytest.approx(means.max() / means.sum(), rel=1e-5)
    assert named[0].channel == 3 and named[0].mean == pytest.approx(means[3], rel=1e-5)
    for stats in top:
        y, x = stats.peak
        assert expected[y, x, stats.channel] == pytest.approx(expected[..., stats.channel].max())


def test_the_heatmaps_brightest_pixel_is_over_the_maps_maximum() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.random((7, 7)).astype(np.float32) * 0.8
        values[tuple(rng.integers(0, 7, 2))] = 1.0  # one clear maximum
        brightness = heatmap(values, 70).astype(int).sum(axis=2)  # the colours brighten with value
        y, x = np.unravel_index(brightness.argmax(), brightness.shape)
        assert (y // 10, x // 10) == np.unravel_index(values.argmax(), values.shape)
    # nothing positive: all the lowest colour, whatever the values
    assert (heatmap(np.zeros((4, 4), np.float32), 8) == heatmap(-np.ones((4, 4)), 8)).all()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"layer": "nope"}, "layer", "layer 'nope' not found in vgg16; valid layers"),
        ({"size": 8}, "size", "size=8 is out of range"),
        ({"size": 4096}, "size", "..512"),
        ({"top_k": 65}, "top_k", "top_k=65 is out of range: 0..64"),
        ({"channels": [512]}, "channels", "channel 512 is out of range: block4_conv3 has 512"),
        ({"top_k": 40, "channels": list(range(30))}, "channels", "asks for 70 maps; at most 64"),
    ],
)
def test_bad_analyses_say_what_to_change(vgg, fields, field, words) -> None:
    asked = {"layer": LAYER, "size": None, "top_k": None, "channels": [], **fields}
    with pytest.raises(InvalidRequestError) as refused:
        plan_analysis(vgg, "vgg16", raw_maps=False, limits=Limits(), **asked)
    assert words in str(refused.value) and refused.value.field == field

"""The ascent engine on small images with seeded random weights."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from filtercast.contract import FilterSpan
from filtercast.grid import build_grid, grid_layout
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import cpu_flags
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.pixels import initial_image
from filtercast_server.engine.rows import Row
from filtercast_server.errors import InvalidRequestError, UnknownModelError
from filtercast_server.jobs import FilterOutcome, Precision
from filtercast_server.planning import OverBudgetError, make_plan
from filtercast_server.presets import CATALOG
from tests.support.engine import CPU, run

SMALL = {"size": 32, "steps": 3}


@pytest.fixture(scope="module")
def vgg() -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", "random", CPU, seed=1)}


def plan_for(models, filters="0:6", precision="float32", seed=7, preset="classic", **overrides):
    overrides = {**SMALL, **overrides}
    return make_plan(
        models, preset=preset, overrides=overrides, filters=filters, precision=precision, seed=seed
    )


def test_batched_equals_one_at_a_time(vgg) -> None:
    plan = plan_for(vgg, dead_threshold=None)
    batched, single = run(vgg, plan, max_batch=6), run(vgg, plan, max_batch=1)
    for index in plan.filters:
        np.testing.assert_allclose(batched[index].loss, single[index].loss, rtol=1e-4, atol=1e-6)
        diff = np.abs(batched[index].image.astype(int) - single[index].image.astype(int))
        assert diff.max() <= 2


def test_same_seed_same_pictures_other_seed_other_pictures(vgg) -> None:
    first, again = run(vgg, plan_for(vgg, seed=3)), run(vgg, plan_for(vgg, seed=3))
    other = run(vgg, plan_for(vgg, seed=4))
    live = [i for i, o in first.items() if not o.dead]
    assert live
    for i in live:
        assert first[i].image.tobytes() == again[i].image.tobytes()
    assert any(first[i].image.tobytes() != other[i].image.tobytes() for i in live)


def test_start_noise_depends_only_on_seed_and_filter() -> None:
    params = CATALOG["classic"].params
    a = initial_image(params, 5, (17,))
    assert a.shape == (128, 128, 3) and a.dtype == np.float32
    assert np.array_equal(a, initial_image(params, 5, (17,)))
    assert not np.array_equal(a, initial_image(params, 5, (18,)))
    assert a.min() >= 118 and a.max() < 138  # (uniform - 0.5) * 20 + 128


def test_dead_filters_stop_at_once_and_are_reported(vgg) -> None:
    outcomes = run(vgg, plan_for(vgg, dead_threshold=1e9))
    assert all(o.dead and o.image is None and o.steps == 1 for o in outcomes.values())
    assert build_grid(list(outcomes.values()), CATALOG["classic"].grid) is None


def test_refill_keeps_every_filter_when_the_batch_is_small(vgg) -> None:
    outcomes = run(vgg, plan_for(vgg, filters="0:7", dead_threshold=None), max_batch=3)
    assert all(o.steps == 3 and o.image.shape == (32, 32, 3) for o in outcomes.values())


def test_step_matches_a_plain_tensorflow_reference(vgg) -> None:
    # One rms-normalised step of the classic loss, written out for one image.
    plan = plan_for(vgg, filters=[5], steps=1, dead_threshold=None)
    extractor = vgg["vgg16"].extractor("block5_conv1", Precision.FLOAT32)
    x = tf.constant(initial_image(plan.params, plan.seed, (5,))[None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean(extractor(x)[..., 5])
    g = tape.gradient(loss, x)
    g = g / (tf.sqrt(tf.reduce_mean(tf.square(g))) + 1e-7)
    expected_image = (x + 1.0 * g).numpy()
    method = AscentEngine(vgg).method(plan.params, Precision.FLOAT32)
    (new,), losses = method.step((x,), [Row(plan.jobs([5])[0])])
    np.testing.assert_allclose(losses.numpy()[0], loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(new.numpy(), expected_image, rtol=1e-5, atol=1e-4)


def test_upscale_preset_runs_rounds_and_ends_at_full_size(vgg) -> None:
    plan = make_plan(
        vgg,
        preset="upscale",
        overrides={"size": 48, "upscale_rounds": 2, "steps": 2, "dead_threshold": None},
        filters="0:4",
        precision="float32",
        seed=1,
    )
    assert plan.params.round_sizes() == [33, 40]
    outcomes = run(vgg, plan, max_batch=3)
    assert all(o.image.shape == (48, 48, 3) and o.steps == 4 for o in outcomes.values())
    grid = build_grid(list(outcomes.values()), plan.grid)
    assert grid.n == 2 and grid.image.shape == (101, 101, 3)


def test_keras_io_preset_on_resnet50v2() -> None:
    models = {"resnet50v2": LoadedModel("resnet50v2", "random", CPU, seed=2)}
    plan = make_plan(
        models,
        preset="keras_io",
        overrides={"size": 96, "steps": 2, "crop": 5},
        filters="0:4",
        precision="float32",
        seed=1,
    )
    outcomes = run(models, plan)
    assert all(o.image.shape == (86, 86, 3) and not o.dead for o in outcomes.values())
    n, order = grid_layout(list(outcomes.values()), plan.grid)
    assert (n, order) == (2, [0, 1, 2, 3])  # keras_io lays out in filter order


def test_bfloat16_follows_float32(vgg) -> None:
    f32 = run(vgg, plan_for(vgg, dead_threshold=None, steps=1))
    bf16 = run(vgg, plan_for(vgg, dead_threshold=None, steps=1, precision="bfloat16"))
    for index, outcome in f32.items():
        np.testing.assert_allclose(bf16[index].loss, outcome.loss, rtol=0.1, atol=1e-2)


def test_grid_ranks_by_loss_and_shrinks_to_the_live_count() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    outcomes = [
        FilterOutcome(i, float(loss), dead, None if dead else image, 1, 0.1)
        for i, (loss, dead) in enumerate(
            [(1, False), (5, False), (0, True), (3, False), (4, False), (2, False)]
        )
    ]
    grid = CATALOG["classic"].grid
    assert grid_layout(outcomes, grid) == (2, [1, 4, 3, 5])
    assert grid_layout(outcomes, dataclasses.replace(grid, n=1)) == (1, [1])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"overrides": {"layer": "block9_conv1"}},
            InvalidRequestError,
            "layer 'block9_conv1' not found in vgg16; valid layers: block1_conv1, block1_conv2",
        ),
        ({"filters": "0:513"}, InvalidRequestError, "this layer has 512 filters: 0..511"),
        (
            {"overrides": {"model": "vgg19"}},
            UnknownModelError,
            "model 'vgg19' is not served here; served models: vgg16",
        ),
        (
            {"overrides": {"size": 16, "border": 4}},
            InvalidRequestError,
            "block5_conv1 with border 4 needs inputs of at least 144 px; size is 16 px",
        ),
        (
            {"overrides": {"size": 64, "border": 16}},
            InvalidRequestError,
            "needs inputs of at least 528 px, above this server's 512 px; use border <= 15",
        ),
        (
            {"overrides": {"layer": "block5_pool", "size": 16}},
            InvalidRequestError,
            "block5_pool with border 0 needs inputs of at least 32 px",
        ),
        (
            {"filters": FilterSpan(0, 2**31 - 1)},
            InvalidRequestError,
            "filter 512 is out of range; this layer has 512 filters",
        ),
        (
            {"overrides": {"layer": "block1_conv1"}, "filters": list(range(3000))},
            InvalidRequestError,
            "3000 filter indices listed; at most 2048 per request",
        ),
        (
            {"preset": "upscale", "overrides": {"size": 512, "steps": 200}},
            OverBudgetError,
            "above this server's limit of 3e+09; ask for at most",
        ),
        ({"precision": "float16"}, InvalidRequestError, "unknown precision 'float16'"),
        ({"seed": -1}, InvalidRequestError, "seed must be in 0..2^63-1"),
    ],
)
def test_bad_requests_fail_before_any_work(vgg, kwargs, error, message) -> None:
    with pytest.raises(error) as info:
        make_plan(vgg, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("layer", "border"),
    [("block1_conv1", 0), ("block3_pool", 0), ("block5_pool", 0), ("block5_conv1", 2)],
)
def test_the_smallest_input_is_exactly_the_smallest_that_works(vgg, layer, border) -> None:
    model = vgg["vgg16"]
    smallest = model.smallest_input(layer, border)
    assert min(model.output_size(layer, smallest)) >= 1 + 2 * border
    assert min(model.output_size(layer, smallest - 1)) < 1 + 2 * border
    make_plan(vgg, overrides={"layer": layer, "size": max(16, smallest), "border": border})


def test_missing_seed_is_drawn_and_recorded(vgg) -> None:
    a, b = make_plan(vgg), make_plan(vgg)
    assert isinstance(a.seed, int) and a.seed != b.seed


def test_auto_precision_follows_the_hardware(tmp_path: Path) -> None:
    assert dataclasses.replace(CPU, native_bf16=True).resolve("auto") is Precision.BFLOAT16
    assert CPU.resolve("auto") is Precision.FLOAT32
    assert CPU.resolve("bfloat16") is Precision.BFLOAT16
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n")
    assert {"avx512_bf16", "amx_tile"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()


def test_missing_weights_file_says_what_to_pass() -> None:
    from filtercast_server.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"weights file not found: /nope\.h5\. Pass --weights"):
        LoadedModel("vgg16", "/nope.h5", CPU)
    with pytest.raises(UnknownModelError, match="valid models: resnet50v2, vgg16, vgg19"):
        LoadedModel("alexnet", "random", CPU)


def test_layers_are_introspected(vgg) -> None:
    layers = {info.name: info for info in vgg["vgg16"].layers}
    assert layers["block5_conv1"].channels == 512 and layers["block5_conv1"].type == "Conv2D"
    assert layers["block1_pool"].type == "MaxPooling2D" and "input_layer" not in layers


def test_batch_defaults_follow_the_device() -> None:
    assert CPU.batch_limits() == (8, 64 * 128 * 128)
    assert dataclasses.replace(CPU, kind="gpu").batch_limits() == (256, 512 * 128 * 128)


def test_imagenet_download_failure_says_to_pass_a_path(monkeypatch) -> None:
    import keras

    from filtercast_server.errors import ModelLoadError

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.vgg16.file_utils.get_file", offline)
    with pytest.raises(ModelLoadError, match=r"offline, pass --weights PATH to a \.weights\.h5"):
        LoadedModel("vgg16", "imagenet", CPU)

"""The robust preset (Fourier image, random views, Adam, pre-activation) and revive."""

import math

import numpy as np
import pytest
import tensorflow as tf

from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.fourier import (
    ADAM_EPS,
    COLOR_MIX,
    SPECTRUM_DIVISOR,
    frequency_scale,
    initial_spectrum,
    view_transform,
)
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.pixels import initial_image
from filtercast_server.engine.rows import Row
from filtercast_server.errors import InvalidRequestError
from filtercast_server.jobs import EngineObserver, Plan, Precision
from filtercast_server.planning import make_plan
from filtercast_server.presets import CATALOG
from tests.support.engine import CPU, run

SMALL = {"size": 32, "steps": 3, "pad": 4, "jitter": 2}
ROBUST = CATALOG["robust"].params


@pytest.fixture(scope="module")
def vgg() -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", "random", CPU, seed=1)}


def robust_plan(models, filters="0:4", seed=7, **overrides) -> Plan:
    return make_plan(
        models,
        preset="robust",
        overrides={**SMALL, **overrides},
        filters=filters,
        precision="float32",
        seed=seed,
    )


def test_the_preset_is_the_feature_visualization_recipe() -> None:
    p = ROBUST
    assert (p.model, p.layer, p.size) == ("vgg16", "block5_conv1", 128)
    assert (p.parameterization, p.objective, p.preprocessing) == (
        "fourier",
        "pre_activation",
        "model",
    )
    # Engine version 2: 45 steps of 0.2 (docs/benchmarks.md, robust at half the cost).
    assert (p.steps, p.step_size, p.init_scale, p.pad, p.jitter) == (45, 0.2, 0.01, 12, 8)
    assert (p.scale_jitter, p.rotate_degrees, p.dead_threshold) == (0.1, 10.0, None)
    assert p.pixel_steps() == 152 * 152 * p.steps  # the network sees the padded view


def test_same_request_same_bytes_other_seed_other_pictures(vgg) -> None:
    first, again = run(vgg, robust_plan(vgg, seed=3)), run(vgg, robust_plan(vgg, seed=3))
    other = run(vgg, robust_plan(vgg, seed=4))
    assert all(not o.dead and o.image.shape == (32, 32, 3) for o in first.values())
    assert all(first[i].image.tobytes() == again[i].image.tobytes() for i in first)
    assert all(first[i].image.tobytes() != other[i].image.tobytes() for i in first)


def test_a_filter_gets_its_picture_whatever_batch_it_shares(vgg) -> None:
    # Views are drawn per (seed, filter, step) and Adam counts steps per row,
    # so batching, and rows joining mid-way (refill), change nothing.
    plan = robust_plan(vgg, filters="0:5")
    batched, refilled = run(vgg, plan), run(vgg, plan, max_batch=2)
    for index in plan.filters:
        np.testing.assert_allclose(batched[index].loss, refilled[index].loss, rtol=1e-3)
        diff = np.abs(batched[index].image.astype(int) - refilled[index].image.astype(int))
        assert diff.max() <= 2, index


def test_the_batch_is_bounded_by_the_pixels_the_network_sees(vgg) -> None:
    engine = AscentEngine(vgg, max_batch=64, max_batch_pixels=10 * 40 * 40)
    plan = robust_plan(vgg)  # 32 px images, 40 px views
    assert engine.batch_size(plan.params) == 10


def test_views_depend_only_on_seed_filter_and_step() -> None:
    a = view_transform(ROBUST, 1, (5,), 10)
    assert np.array_equal(a, view_transform(ROBUST, 1, (5,), 10))
    assert not np.array_equal(a, view_transform(ROBUST, 1, (5,), 11))
    assert not np.array_equal(a, view_transform(ROBUST, 1, (6,), 10))
    assert not np.array_equal(a, view_transform(ROBUST, 2, (5,), 10))


def test_a_still_view_is_the_padded_image() -> None:
    still = ROBUST.__class__(**{**ROBUST.to_dict(), "jitter": 0, "scale_jitter": 0.0})
    still = still.__class__(**{**still.to_dict(), "rotate_degrees": 0.0})
    a0, a1, a2, b0, b1, b2, *_ = view_transform(still, 0, (0,), 0)
    # Output pixel (x, y) reads input (x - pad, y - pad).
    assert (a0, a1, b0, b1) == (1, 0, 0, 1)
    assert (a2, b2) == (-still.pad, -still.pad)


def test_view_scale_and_rotation_keep_the_centre() -> None:
    for step in range(20):
        a0, a1, a2, b0, b1, b2, *_ = view_transform(ROBUST, 3, (9,), step)
        scale = 1 / math.hypot(a0, a1)
        assert 1 - ROBUST.scale_jitter - 1e-6 <= scale <= 1 + ROBUST.scale_jitter + 1e-6
        assert abs(math.degrees(math.atan2(a1, a0))) <= ROBUST.rotate_degrees + 1e-4
        # The view's centre, less the shift, reads the image's centre.
        outer, inner = (ROBUST.size + 2 * ROBUST.pad - 1) / 2, (ROBUST.size - 1) / 2
        for dx in range(-ROBUST.jitter, ROBUST.jitter + 1):
            for dy in range(-ROBUST.jitter, ROBUST.jitter + 1):
                x, y = outer + dx, outer + dy
                if (
                    abs(a0 * x + a1 * y + a2 - inner) < 1e-3
                    and abs(b0 * x + b1 * y + b2 - inner) < 1e-3
                ):
                    break
            else:
                continue
            break
        else:
            pytest.fail(f"no shift within ±{ROBUST.jitter} px maps the centre at step {step}")


def test_spectrum_scale_is_one_over_frequency() -> None:
    scale = frequency_scale(8).numpy()
    assert scale.shape == (8, 5)
    assert scale[0, 0] == pytest.approx(8 * 8)  # zero frequency floored at 1/size
    assert scale[0, 1] == pytest.approx(8 / (1 / 8))
    assert scale[4, 4] == pytest.approx(8 / math.hypot(0.5, 0.5))


def test_start_spectrum_depends_only_on_seed_filter_and_attempt() -> None:
    a = initial_spectrum(ROBUST, 1, (2,), 3)
    assert a.shape == (3, 128, 65, 2) and a.dtype == np.float32
    assert np.array_equal(a, initial_spectrum(ROBUST, 1, (2,), 3))
    assert not np.array_equal(a, initial_spectrum(ROBUST, 1, (3,), 3))
    assert not np.array_equal(a, initial_spectrum(ROBUST, 1, (2,), 3, attempt=1))
    assert abs(a.std() - ROBUST.init_scale) < 0.1 * ROBUST.init_scale


def test_one_step_matches_a_plain_tensorflow_reference(vgg) -> None:
    """The whole recipe written out for one row: spectrum -> picture -> view -> loss -> Adam."""
    plan = robust_plan(vgg, filters=[3], steps=1)
    p, model = plan.params, vgg["vgg16"]
    spectrum = tf.constant(initial_spectrum(p, plan.seed, (3,), 3)[None])
    scale = frequency_scale(p.size)
    with tf.GradientTape() as tape:
        tape.watch(spectrum)
        coefficients = tf.complex(spectrum[..., 0] * scale, spectrum[..., 1] * scale)
        linear = tf.transpose(tf.signal.irfft2d(coefficients), [0, 2, 3, 1]) / SPECTRUM_DIVISOR
        rgb = tf.sigmoid(tf.reshape(tf.reshape(linear, [-1, 3]) @ COLOR_MIX.T, linear.shape))
        view = tf.raw_ops.ImageProjectiveTransformV3(
            images=rgb,
            transforms=view_transform(p, plan.seed, (3,), 0)[None],
            output_shape=[p.size + 2 * p.pad] * 2,
            fill_value=0.5,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        caffe = view[..., ::-1] * 255.0 - [103.939, 116.779, 123.68]  # VGG's own preprocessing
        conv = model._variant(Precision.FLOAT32).get_layer("block5_conv1")
        trunk = tf.keras.Model(
            model._variant(Precision.FLOAT32).inputs, conv.input
        )  # up to the conv; its pre-activation is written out below
        pre = tf.nn.conv2d(trunk(caffe), conv.kernel, 1, "SAME") + conv.bias
        loss = tf.reduce_mean(pre[..., 3])
    grad = tape.gradient(loss, spectrum)
    # Adam's first step: m_hat = g, v_hat = g², so the move is lr * g / (|g| + eps).
    expected = spectrum + p.step_size * grad / (tf.abs(grad) + ADAM_EPS)

    method = AscentEngine(vgg).method(p, Precision.FLOAT32)
    state = tuple(tf.constant(a) for a in method.initial([Row(plan.jobs([3])[0])]))
    (new, m, v), losses = method.step(state, [Row(plan.jobs([3])[0])])
    np.testing.assert_allclose(losses.numpy()[0], loss.numpy(), rtol=1e-4)
    np.testing.assert_allclose(new.numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(m.numpy(), 0.1 * grad.numpy(), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(v.numpy(), 0.001 * grad.numpy() ** 2, rtol=1e-3, atol=1e-20)


def test_pre_activation_is_the_output_before_relu() -> None:
    resnet = LoadedModel("resnet50v2", "random", CPU, seed=2)
    x = tf.random.uniform((1, 64, 64, 3), 0, 255, seed=1)
    vgg = LoadedModel("vgg16", "random", CPU, seed=1)
    for model, layer in [(vgg, "block3_conv2"), (resnet, "conv3_block1_preact_relu")]:
        after = model.extractor(layer, Precision.FLOAT32)(x).numpy()
        before = model.extractor(layer, Precision.FLOAT32, pre_activation=True)(x).numpy()
        assert before.min() < 0 <= after.min(), layer
        np.testing.assert_allclose(np.maximum(before, 0), after, rtol=1e-4, atol=1e-3)
    # A layer without an activation is its own pre-activation.
    plain = resnet.extractor("conv3_block4_out", Precision.FLOAT32)(x).numpy()
    same = resnet.extractor("conv3_block4_out", Precision.FLOAT32, pre_activation=True)(x)
    np.testing.assert_array_equal(plain, same.numpy())


def test_training_preprocessing_is_the_models_own(vgg) -> None:
    model = vgg["vgg16"]
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    caffe = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    raw = model.extractor("block2_conv1", Precision.FLOAT32)
    trained = model.extractor("block2_conv1", Precision.FLOAT32, training_preprocessing=True)
    np.testing.assert_allclose(trained(x).numpy(), raw(caffe).numpy(), rtol=1e-4, atol=1e-3)
    assert LoadedModel("resnet50v2", "random", CPU).training_preprocessing.name == "tf"


@pytest.mark.parametrize(
    ("preset", "overrides", "field", "message"),
    [
        ("classic", {"jitter": 4}, "jitter", "jitter does not apply to preset classic"),
        ("robust", {"revive": 2}, "revive", "revive does not apply to preset robust"),
        ("robust", {"gradient_norm": "l2"}, "gradient_norm", "its parameters: border, crop"),
        ("robust", {"upscale_rounds": 2}, "upscale_rounds", "a Fourier spectrum"),
        ("classic", {"revive": 2, "dead_threshold": None}, "revive", "finds none dead"),
        ("classic", {"revive": 9}, "revive", "revive=9 is out of range; valid: 0..8"),
        ("robust", {"objective": "post"}, "objective", "activation, pre_activation"),
        ("robust", {"preprocessing": "bgr"}, "preprocessing", "raw, model"),
        ("robust", {"scale_jitter": 0.9}, "scale_jitter", "valid: 0.0..0.5"),
        ("robust", {"rotate_degrees": -1.0}, "rotate_degrees", "valid: 0.0..180.0"),
        ("robust", {"pad": 100}, "pad", "valid: 0..64"),
        ("robust", {"parameterization": "pixels"}, "parameterization", "unknown parameter"),
        ("classic", {"size": 12.5}, "size", "size must be an integer, got 12.5"),
        ("classic", {"revive": "abc"}, "revive", "revive must be an integer"),
        ("classic", {"step_size": True}, "step_size", "step_size must be a number"),
        ("classic", {"dead_threshold": float("nan")}, "dead_threshold", "must be finite"),
        ("robust", {"objective": 3}, "objective", "objective must be text"),
        ("robust", {"size": 512, "pad": 12}, "pad", "size + 2 x pad = 536 px"),
    ],
)
def test_overrides_are_validated(vgg, preset, overrides, field, message) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_plan(
            vgg, preset=preset, overrides=overrides, filters="0:2", precision="float32", seed=1
        )
    assert message in str(info.value)
    assert info.value.field == field


def test_revive_restarts_a_filter_dead_at_its_first_step_up_to_n_times(vgg) -> None:
    # A threshold no filter reaches: every attempt dies at its first step.
    plan = make_plan(
        vgg,
        preset="classic",
        overrides={"size": 32, "steps": 3, "dead_threshold": 1e9, "revive": 2},
        filters="0:5",
        precision="float32",
        seed=1,
    )
    for max_batch in (64, 2):  # restarts queue ahead of new filters when rows are scarce
        outcomes = run(vgg, plan, max_batch=max_batch)
        assert all(o.dead and o.revived == 2 and o.steps == 3 for o in outcomes.values())

    class Restarts(EngineObserver):
        count = 0

        def on_restart(self, params) -> None:
            self.count += 1

    observer = Restarts()
    list(AscentEngine(vgg, observer=observer).run(plan))
    assert observer.count == 5 * 2


def test_revive_in_upscale_rounds(vgg) -> None:
    plan = make_plan(
        vgg,
        preset="upscale",
        overrides={"size": 48, "upscale_rounds": 2, "steps": 2, "dead_threshold": 1e9, "revive": 1},
        filters="0:3",
        precision="float32",
        seed=1,
    )
    outcomes = run(vgg, plan, max_batch=2)
    assert all(o.dead and o.revived == 1 and o.steps == 2 for o in outcomes.values())


def test_revive_starts_from_smooth_noise_keyed_by_attempt() -> None:
    params = CATALOG["classic"].params
    first, second = (
        initial_image(params, 5, (17,), attempt=1),
        initial_image(params, 5, (17,), attempt=2),
    )
    assert np.array_equal(first, initial_image(params, 5, (17,), attempt=1))
    assert not np.array_equal(first, second)
    assert first.shape == (128, 128, 3) and first.dtype == np.float32
    assert abs(first.mean() - 128) < 10 and abs(first.std() - params.init_scale) < 0.5
    # Smooth: neighbours are far closer than in the seeds' i.i.d. noise.
    seed_noise = initial_image(params, 5, (17,))

    def roughness(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x, axis=0)).mean() / x.std())

    assert roughness(first) < 0.3 * roughness(seed_noise)


@pytest.fixture(scope="module")
def real_vgg(vgg16_weights) -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", str(vgg16_weights), select_device("auto"))}


# Filters of block5_conv1 the classic seed finds dead at 128 px with seed 0.
CLASSIC_DEAD = "12,16,19,21,22,26,0,1"


def test_classic_revive_brings_dead_filters_back_and_leaves_the_rest(real_vgg) -> None:
    engine = AscentEngine(real_vgg)
    plain = {
        o.index: o
        for o in engine.run(
            make_plan(
                real_vgg,
                preset="classic",
                overrides={"steps": 4},
                filters=CLASSIC_DEAD,
                precision="float32",
                seed=0,
            )
        )
    }
    revived = {
        o.index: o
        for o in engine.run(
            make_plan(
                real_vgg,
                preset="classic",
                overrides={"steps": 4, "revive": 3},
                filters=CLASSIC_DEAD,
                precision="float32",
                seed=0,
            )
        )
    }
    dead = [i for i, o in plain.items() if o.dead]
    assert len(dead) >= 4, "the classic seed finds these filters dead"
    assert sum(o.dead for o in revived.values()) < len(dead) // 2
    for index, outcome in plain.items():
        if outcome.dead:
            assert revived[index].revived >= 1
        else:  # a filter alive at once is untouched by revive
            assert revived[index].revived == 0
            assert revived[index].image.tobytes() == outcome.image.tobytes()
    for outcome in revived.values():
        if not outcome.dead:
            assert 20 <= outcome.image.std() <= 27  # a real picture, not a flat one


def test_robust_gives_every_filter_a_climbing_picture(real_vgg) -> None:
    engine = AscentEngine(real_vgg)
    overrides = {"size": 64, "pad": 6, "jitter": 4}
    start = {
        o.index: o.loss
        for o in engine.run(
            make_plan(
                real_vgg,
                preset="robust",
                overrides={**overrides, "steps": 1},
                filters=CLASSIC_DEAD,
                precision="auto",
                seed=0,
            )
        )
    }
    end = {
        o.index: o
        for o in engine.run(
            make_plan(
                real_vgg,
                preset="robust",
                overrides={**overrides, "steps": 12},
                filters=CLASSIC_DEAD,
                precision="auto",
                seed=0,
            )
        )
    }
    assert not any(o.dead for o in end.values())
    for index, outcome in end.items():
        assert outcome.image.shape == (64, 64, 3) and outcome.image.std() > 10
        assert outcome.loss > start[index] + 1.0, index

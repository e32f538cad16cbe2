"""Objectives on a tiny network: each loss against TensorFlow written out, and what pictures do.

The network is small and seeded (two convolutions, a dense head ending in a
softmax), so every objective kind runs in seconds; the pictures' claims are
checked on the network itself, without the random views they were made with.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from filtercast import contract
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.pixels import initial_image
from filtercast_server.engine.rows import Row
from filtercast_server.engine.tf import keras
from filtercast_server.errors import InvalidRequestError
from filtercast_server.jobs import Precision
from filtercast_server.model_registry import PREPROCESSING, ModelConfig
from filtercast_server.objectives import Diversity, Interpolation, objective_of
from filtercast_server.planning import make_plan
from tests.support.digits import classify, train_classifier
from tests.support.engine import CPU, run

SIDE = 32  # the network's fixed input
ROBUST = {"model": "tiny", "size": SIDE - 8, "pad": 4, "jitter": 2, "steps": 40}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, LoadedModel]:
    keras.utils.set_random_seed(3)
    images = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(images)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(5, activation="softmax", name="logits")(x)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    keras.Model(images, x).save(path)
    return {"tiny": LoadedModel("tiny", "", CPU, config=ModelConfig("tiny", path=Path(path)))}


def objectives(*texts: str):
    return [objective_of(contract.parse_objective(t), "objectives") for t in texts]


def plan_of(models, *texts: str, preset="classic", **kwargs):
    overrides = {"model": "tiny", "size": SIDE, "steps": 1, **kwargs.pop("overrides", {})}
    return make_plan(
        models,
        preset=preset,
        overrides=overrides,
        precision="float32",
        seed=5,
        objectives=objectives(*texts),
        **kwargs,
    )


def activations(model: LoadedModel, layer: str, pictures: np.ndarray) -> np.ndarray:
    """`layer`'s pre-activations (what robust climbs) of uint8 pictures, in its views' gray pad."""
    extractor = model.extractor(
        layer, Precision.FLOAT32, training_preprocessing=True, pre_activation=True
    )
    pad = (SIDE - pictures.shape[1]) // 2
    padded = np.pad(pictures, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=128)
    return extractor(tf.constant(padded, tf.float32)).numpy()


def test_dense_layers_are_described_with_their_activation(tiny) -> None:
    gap, logits = tiny["tiny"].dense_layers  # every (N, units) output, pooling included
    assert (gap.name, gap.units, gap.activation) == ("gap", 16, "linear")
    assert (logits.name, logits.units, logits.activation) == ("logits", 5, "softmax")


def test_each_objective_is_its_tensorflow_computation(tiny) -> None:
    model = tiny["tiny"]
    vector = np.linspace(-1.0, 1.0, 16).astype(np.float32)
    inline = "[" + ",".join(f"{v:.6f}" for v in vector) + "]"
    texts = [
        "conv_b:3",
        "conv_b:3@center",
        "conv_b:3@(1,4)",
        "layer(conv_a)",
        f"direction(conv_b, {inline})",
        f"direction(conv_b, {inline}, cossim=2)",
        "logits:2",
        "2*conv_b:3 - 0.5*conv_a:1 + logits:4",
    ]
    plan = plan_of(tiny, *texts)
    x = tf.constant(np.stack([initial_image(plan.params, 5, (i,)) for i in range(len(texts))]))
    a = model.extractor("conv_a", Precision.FLOAT32)(x).numpy()
    b = model.extractor("conv_b", Precision.FLOAT32)(x).numpy()
    pooled = b.mean(axis=(1, 2))
    head = keras.saving.load_model(model.config.path).get_layer("logits")
    weights, bias = head.get_weights()
    logits = pooled @ weights + bias  # before the softmax
    v = vector.astype(np.float64)
    dot = b @ v
    cos = dot / (np.linalg.norm(b, axis=-1) * np.linalg.norm(v) + 1e-12)
    h, w = b.shape[1:3]
    expected = [
        b[0, ..., 3].mean(),
        b[1, h // 2, w // 2, 3],
        b[2, 1, 4, 3],
        np.square(a[3]).mean(),
        dot[4].mean(),
        (dot[5] * np.maximum(cos[5], 0.1) ** 2).mean(),
        logits[6, 2],
        2 * b[7, ..., 3].mean() - 0.5 * a[7, ..., 1].mean() + logits[7, 4],
    ]
    engine = AscentEngine(tiny)
    assert not engine.compiled(plan.params, Precision.FLOAT32, plan.structure)
    method = engine.method(plan.params, Precision.FLOAT32, plan.structure)
    # what the servicer asks before it charges a client for a new step
    assert engine.compiled(plan.params, Precision.FLOAT32, plan.structure)
    assert not engine.compiled(plan.params, Precision.BFLOAT16, plan.structure)
    rows = [Row(job) for job in plan.jobs(plan.filters)]
    _, losses = method.step((x,), rows)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-4, atol=1e-5)
    # and the neuron's centre is resolved where the network sees it
    assert plan.targets[1].objective.terms[0].position == (h // 2, w // 2)


def test_a_one_hot_direction_makes_the_channel_picture(tiny) -> None:
    channel = plan_of(tiny, "conv_b:3", preset="robust", overrides=ROBUST)
    one_hot = "[" + ",".join("1" if c == 3 else "0" for c in range(16)) + "]"
    direction = plan_of(tiny, f"direction(conv_b, {one_hot})", preset="robust", overrides=ROBUST)
    assert channel.structure.plain and not direction.structure.plain
    # the same start and views: only the way the loss is written differs
    same_noise = dataclasses.replace(direction.targets[0], noise=channel.targets[0].noise)
    direction = dataclasses.replace(direction, targets=(same_noise,))
    a, b = run(tiny, channel)[0], run(tiny, direction)[0]
    assert abs(a.loss - b.loss) <= 1e-3 * abs(a.loss)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_a_single_channel_objective_is_exactly_that_filter(tiny) -> None:
    by_objective = plan_of(tiny, "conv_b:3", preset="robust", overrides=ROBUST)
    by_filter = make_plan(
        tiny, preset="robust", overrides=ROBUST, filters=[3], precision="float32", seed=5
    )
    a, b = run(tiny, by_objective)[0], run(tiny, by_filter)[3]
    assert np.array_equal(a.image, b.image) and a.loss == b.loss


def test_a_minus_b_lowers_b_and_still_raises_a(tiny) -> None:
    model = tiny["tiny"]
    plain = plan_of(tiny, "conv_b:3", preset="robust", overrides=ROBUST)
    minus = plan_of(tiny, "conv_b:3 - conv_b:7", preset="robust", overrides=ROBUST)
    start = plan_of(tiny, "conv_b:3", preset="robust", overrides={**ROBUST, "steps": 1})
    pictures = [run(tiny, p)[0].image for p in (plain, minus, start)]
    means = activations(model, "conv_b", np.stack(pictures)).mean(axis=(1, 2))
    assert means[1, 7] < means[0, 7]  # B lower than in A's own picture
    assert means[1, 3] > means[2, 3]  # A still above where it started


def test_a_neuron_picture_drives_its_neuron_above_every_other_channel_there(tiny) -> None:
    plan = plan_of(tiny, "conv_b:5@center", preset="robust", overrides=ROBUST)
    y, x = plan.targets[0].objective.terms[0].position
    picture = run(tiny, plan)[0].image
    seen = activations(tiny["tiny"], "conv_b", picture[None])[0, y, x]
    assert seen.argmax() == 5, seen


def test_diversity_pictures_differ_and_each_drives_its_objective(vgg16_weights) -> None:
    # Gram matrices mean something on a trained network: ImageNet VGG16.
    models = {"vgg16": LoadedModel("vgg16", str(vgg16_weights), CPU)}
    model = models["vgg16"]
    settings = {"size": 64, "steps": 30, "layer": "block4_conv3"}

    def pictures(k_weight: float | None, steps: int = 30) -> np.ndarray:
        plan = make_plan(
            models,
            preset="robust",
            overrides={**settings, "steps": steps},
            precision="float32",
            seed=5,
            objectives=objectives("block4_conv3:12"),
            diversity=Diversity(3, k_weight) if k_weight is not None else None,
        )
        outcomes = run(models, plan)
        return np.stack([outcomes[i].image for i in sorted(outcomes)])

    def seen(images: np.ndarray) -> np.ndarray:
        extractor = model.extractor("block4_conv3", Precision.FLOAT32, training_preprocessing=True)
        return extractor(tf.constant(images, tf.float32)).numpy()

    def gram_cosine(images: np.ndarray) -> float:
        found = seen(images)
        gram = np.einsum("bhwc,bhwd->bcd", found, found).reshape(len(found), -1)
        gram /= np.linalg.norm(gram, axis=1, keepdims=True)
        cosine = gram @ gram.T
        return float((cosine.sum() - len(found)) / (len(found) * (len(found) - 1)))

    alike, diverse = pictures(1e-9), pictures(2.0)
    assert gram_cosine(diverse) < gram_cosine(alike) - 0.1
    start = seen(pictures(None, steps=1))[..., 12].mean()
    assert (seen(diverse)[..., 12].mean(axis=(1, 2)) > 10 * start).all()


def test_interpolation_frames_move_from_a_to_b(tiny) -> None:
    model = tiny["tiny"]
    start, end = objectives("conv_b:3", "conv_b:7")
    plan = make_plan(
        tiny,
        preset="robust",
        overrides=ROBUST,
        precision="float32",
        seed=5,
        interpolation=Interpolation(start, end, 5),
    )
    outcomes = run(tiny, plan)
    pictures = np.stack([outcomes[i].image for i in range(5)])
    means = activations(model, "conv_b", pictures).mean(axis=(1, 2))
    towards_b = means[:, 7] - means[:, 3]
    assert (np.diff(towards_b) > 0).all(), towards_b
    # the frames share their low frequencies: neighbours look alike
    low = [np.asarray(tf.image.resize(p[None].astype(np.float32), (4, 4)))[0] for p in pictures]
    assert np.abs(low[0] - low[1]).mean() < np.abs(low[0] - low[-1]).mean() + 1e-6


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (["nope:1"], {}, "layer 'nope' not found"),
        (["conv_b:16"], {}, "index 16 is out of range; conv_b has 16 channels"),
        (["logits:5"], {}, "logits has 5 units"),
        (["logits:1@center"], {}, "logits is a dense layer"),
        (["conv_b:1@(99,0)"], {}, "outside conv_b's"),
        (["direction(conv_b, [1, 2])"], {}, "needs 16 values"),
        (["conv_b:1"], {"diversity": Diversity(3)}, "runs on the robust preset"),
        (["conv_b:1"], {"diversity": Diversity(99)}, "diversity.k must be 2..16"),
        (["conv_b:1"], {"diversity": Diversity(2, layer="logits"), "preset": "robust"}, "dense"),
        (["conv_b:1"], {"filters": [1]}, "filters or objectives, not both"),
    ],
)
def test_bad_objectives_say_what_to_change(tiny, texts, kwargs, message) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(")):
        plan_of(tiny, *texts, **kwargs)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("digits") / "digits.keras"
    assert train_classifier(path, seed=1) > 0.9
    return path


def test_the_picture_of_class_k_is_classified_as_k(digits) -> None:
    config = ModelConfig("digits", path=digits, preprocessing=PREPROCESSING["unit"])
    models = {"digits": LoadedModel("digits", "", CPU, config=config)}
    hits = []
    for seed in (3, 4):
        plan = make_plan(
            models,
            preset="robust",
            overrides={"model": "digits", "size": 32, "pad": 0, "jitter": 2},
            precision="float32",
            seed=seed,
            objectives=objectives(*(f"logits:{k}" for k in range(10))),
        )
        assert not plan.structure.plain and plan.structure.slots[0].kind == "unit"
        outcomes = run(models, plan)
        pictures = np.stack([outcomes[k].image for k in range(10)])
        hits += list(classify(digits, pictures) == np.arange(10))
    assert np.mean(hits) >= 0.95  # the target: 95% of class pictures are their class

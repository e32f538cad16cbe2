"""The preset catalog: every parameter of one version of the algorithm, by name.

The three seeds (published Keras examples, reproduced faithfully) and
``robust``, the feature-visualization recipe of Olah et al. (Distill 2017).
Changing a number here moves pictures: it needs a new cache ENGINE_VERSION
(tests/engine/test_cache_keys.py fails otherwise).
"""

import dataclasses

from filtercast_server.errors import InvalidRequestError, quoted
from filtercast_server.params import AscentParams, GridParams, Preset

# Engine version 2: 45 steps at 0.2 reach what 100 at 0.05 did (each filter's own activation,
# robustness) in 45% of the time (bench/robust_recipes.py, docs/benchmarks.md); the old
# recipe is the overrides {"steps": 100, "step_size": 0.05}.
ROBUST_STEPS, ROBUST_STEP_SIZE = 45, 0.2

# Keras' classic conv_filter_visualization.py.
CLASSIC = AscentParams(
    model="vgg16",
    layer="block5_conv1",
    size=128,
    steps=20,
    step_size=1.0,
    init_scale=20.0,
    init_offset=128.0,
    gradient_norm="rms",
    border=0,
    dead_threshold=0.0,
    upscale_rounds=0,
    upscale_factor=1.0,
    deprocess_std=0.1,
    deprocess_eps=1e-7,
    crop=0,
)

CATALOG: dict[str, Preset] = {
    "classic": Preset(CLASSIC, GridParams(8, 5, "loss"), default_filters=200),
    # Its later version: 9 rounds of 15 steps, upscaling by 1.2 to 412 px.
    "upscale": Preset(
        dataclasses.replace(
            CLASSIC,
            size=412,
            steps=15,
            dead_threshold=1e-7,
            upscale_rounds=9,
            upscale_factor=1.2,
            deprocess_std=0.25,
        ),
        GridParams(None, 5, "loss"),
        default_filters=None,
    ),
    # keras.io "Visualizing what convnets learn".
    "keras_io": Preset(
        AscentParams(
            model="resnet50v2",
            layer="conv3_block4_out",
            size=180,
            steps=30,
            step_size=10.0,
            init_scale=0.25,
            init_offset=0.0,
            gradient_norm="l2",
            border=2,
            dead_threshold=None,
            upscale_rounds=0,
            upscale_factor=1.0,
            deprocess_std=0.15,
            deprocess_eps=1e-5,
            crop=25,
        ),
        GridParams(8, 5, "index"),
        default_filters=64,
    ),
    # Olah et al., "Feature Visualization" (Distill 2017), as in Lucid: the
    # first 64 filters of VGG16 block5_conv1, every one with a picture.
    "robust": Preset(
        dataclasses.replace(
            CLASSIC,
            steps=ROBUST_STEPS,
            step_size=ROBUST_STEP_SIZE,
            init_scale=0.01,
            init_offset=0.0,
            dead_threshold=None,
            parameterization="fourier",
            objective="pre_activation",
            preprocessing="model",
            pad=12,
            jitter=8,
            scale_jitter=0.1,
            rotate_degrees=10.0,
        ),
        GridParams(8, 5, "loss"),
        default_filters=64,
    ),
}


def preset(name: str) -> Preset:
    """The preset called `name`; InvalidRequestError naming the valid ones."""
    try:
        return CATALOG[name]
    except KeyError:
        raise InvalidRequestError(
            f"unknown preset {quoted(name)}; valid: {', '.join(CATALOG)}", "preset"
        ) from None

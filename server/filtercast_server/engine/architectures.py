"""Where a network comes from: keras.applications architectures, weights, model files.

A built-in is constructed from keras.applications with ImageNet weights
(Keras' own download and cache), a weights file, or seeded random weights;
an operator's own model is a .keras or full-model .h5 file, loaded in Keras
safe mode unless allowed otherwise. Also the preprocessing layer put in front.
"""

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filtercast_server.engine.tf import keras
from filtercast_server.errors import ModelLoadError
from filtercast_server.jobs import Precision
from filtercast_server.model_registry import ModelConfig, Preprocessing

log = logging.getLogger(__name__)
POLICIES = {Precision.FLOAT32: "float32", Precision.BFLOAT16: "mixed_bfloat16"}
_policy_lock = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture from keras.applications."""

    build: Callable[..., keras.Model]
    default_layer: str
    training_preprocessing: str  # what keras.applications' preprocess_input does


MODEL_SPECS: dict[str, ModelSpec] = {
    "vgg16": ModelSpec(keras.applications.VGG16, "block5_conv1", "caffe"),
    "vgg19": ModelSpec(keras.applications.VGG19, "block5_conv1", "caffe"),
    "resnet50v2": ModelSpec(keras.applications.ResNet50V2, "conv3_block4_out", "tf"),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def construct(spec: ModelSpec, weights: str | None, precision: Precision) -> keras.Model:
    """`spec` in `precision`, with `weights` ("imagenet" or None: random)."""
    # keras.applications take no dtype argument: the global policy decides,
    # so it is set only for the duration of this construction.
    with _policy_lock:
        keras.config.set_dtype_policy(POLICIES[precision])
        try:
            return spec.build(include_top=False, weights=weights, input_shape=(None, None, 3))
        finally:
            keras.config.set_dtype_policy("float32")


def load_builtin(
    name: str, spec: ModelSpec, weights: str, seed: int
) -> tuple[keras.Model, str, str]:
    """Built-in `name` with `weights` (imagenet, random, or a .weights.h5 path).

    Returns the model, its weights' source and their sha256 (empty but for a
    file: callers see the file's name and hash, never where it lives here).
    """
    if weights == "random":
        keras.utils.set_random_seed(seed)
        return construct(spec, None, Precision.FLOAT32), weights, ""
    if weights == "imagenet":
        try:
            return construct(spec, "imagenet", Precision.FLOAT32), weights, ""
        except Exception as error:
            raise ModelLoadError(
                f"could not load ImageNet weights for {name} ({error}). Keras downloads "
                "them on first use; offline, pass --weights PATH to a .weights.h5 file"
            ) from error
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(
            f"weights file not found: {path}. Pass --weights imagenet, random or an "
            "existing .weights.h5 path"
        )
    model = construct(spec, None, Precision.FLOAT32)
    try:
        model.load_weights(str(path))
    except Exception as error:
        raise ModelLoadError(
            f"could not load {path} into {name}: {error}. The file must hold the "
            f"weights of keras.applications {name} with include_top=False"
        ) from error
    return model, path.name, sha256_of(path)


def load_file(config: ModelConfig) -> keras.Model:
    """A .keras or full-model .h5 file, in Keras safe mode unless the operator allowed otherwise."""
    assert config.path is not None
    if not config.safe_mode:
        log.warning(
            "loading %s from %s with safe_mode off: code stored in the file runs",
            config.name,
            config.path.name,
        )
    try:
        return keras.saving.load_model(
            config.path,
            custom_objects=config.custom_objects or None,
            compile=False,
            safe_mode=config.safe_mode,
        )
    except Exception as error:
        if config.safe_mode and "safe_mode" in str(error):
            raise ModelLoadError(
                f"model {config.name}: {config.path.name} holds code (a Lambda layer) that runs "
                "when it loads, and Keras safe mode refused it. If you trust the file, allow it "
                f"with --allow-unsafe {config.name} (or safe_mode = false in the models file)"
            ) from error
        raise ModelLoadError(
            f"model {config.name}: could not load {config.path.name}: {error}. It must be a "
            "Keras 3 .keras file or a full-model .h5 (custom layers: --custom-objects)"
        ) from error


@keras.saving.register_keras_serializable(package="filtercast")
class InputPreprocessing(keras.layers.Layer):
    """(x, channels reversed when bgr) - mean) / std: a model's own input convention.

    Runs in float32 ahead of the network (whose first layer casts to its own
    compute dtype), so bfloat16 never touches 0..255 pixel values.
    """

    def __init__(self, preprocessing: Preprocessing, **kwargs: Any) -> None:
        super().__init__(dtype="float32", **kwargs)
        self.bgr = preprocessing.bgr
        self.mean = [float(v) for v in preprocessing.mean]
        self.std = [float(v) for v in preprocessing.std]

    def call(self, images: Any) -> Any:
        """The preprocessed batch."""
        if self.bgr:
            images = keras.ops.flip(images, axis=-1)
        return (images - keras.ops.array(self.mean)) / keras.ops.array(self.std)

"""The networks the service visualizes: loading, introspection, feature extractors.

A model is a built-in architecture (``imagenet`` weights through Keras' own
download and cache, a weights file, or seeded ``random`` weights) or an
operator's own .keras/.h5 file (see registry.py). It is loaded once, stays
resident on its device, and builds a feature extractor truncated at a layer
(nested ones included), with the model's preprocessing in front, on first
use, cached per (layer, precision).
"""

import hashlib
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from filtercast_server.devices import Device
from filtercast_server.errors import (
    InvalidRequestError,
    ModelLoadError,
    UnknownModelError,
    quoted,
)
from filtercast_server.registry import PREPROCESSING, ModelConfig, Preprocessing
from filtercast_server.tf import keras, tf
from filtercast_server.work import Precision


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
# Layers that are an activation and nothing else: their pre-activation is their input.
ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)

MAX_LISTED = 40  # layers named in an error: its trailers stay well under gRPC's 8 KiB
MAX_PROBE_SIZE = 1 << 14  # no layer of an image model needs a larger input to be computed
POLICIES = {Precision.FLOAT32: "float32", Precision.BFLOAT16: "mixed_bfloat16"}
_policy_lock = threading.Lock()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerInfo:
    """A layer whose output is (H, W, C): where ascent can be run."""

    name: str  # "block3_conv2", or "backbone/block3_conv2" inside a nested model
    type: str
    channels: int
    stride: int  # input pixels per output pixel
    dtype: str = "float32"  # of its output


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _construct(spec: ModelSpec, weights: str | None, precision: Precision) -> keras.Model:
    # keras.applications take no dtype argument: the global policy decides,
    # so it is set only for the duration of this construction.
    with _policy_lock:
        keras.config.set_dtype_policy(POLICIES[precision])
        try:
            return spec.build(include_top=False, weights=weights, input_shape=(None, None, 3))
        finally:
            keras.config.set_dtype_policy("float32")


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


def _feature_layers(model: keras.Model) -> list[tuple[str, Any, Any]]:
    """(path, layer, output tensor in `model`'s graph) for every (H, W, C) layer, nested too.

    A layer inside a nested Functional/Sequential model is named "outer/inner";
    its tensor is made in `model`'s graph by calling a sub-model of the nested
    one (cut at its layers) on the tensor that feeds it (its first call site).
    """
    found: list[tuple[str, Any, Any]] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            inner = _feature_layers(layer)
            if not inner:
                continue
            cut = keras.Model(layer.inputs[0], [tensor for _, _, tensor in inner])
            feed = layer._inbound_nodes[0].input_tensors[0]  # where `model` calls it
            outputs = cut(feed)
            outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
            found += [
                (f"{layer.name}/{path}", leaf, tensor)
                for (path, leaf, _), tensor in zip(inner, outputs, strict=True)
            ]
        elif len(layer.output.shape) == 4:
            found.append((layer.name, layer, layer.output))
    return found


def _fused_activation(layer: Any) -> bool:
    """Whether `layer` applies a non-linear activation of its own (Conv2D(activation=...))."""
    activation = getattr(layer, "activation", None)
    return callable(activation) and activation is not keras.activations.linear


# What TensorFlow accepts inside a graph node's name (node_def_util's IsValidNodeName):
# letters, digits and _ . -, with ">" only before a letter, digit or dot. A layer's name
# becomes part of its nodes' names when a step is traced.
TRACEABLE_NAME = re.compile(r"(?:[A-Za-z0-9_.\-]|>[A-Za-z0-9.])+")


def _untraceable(model: Any, prefix: str = "") -> list[str]:
    """Paths of the layers (nested ones too) whose names TensorFlow cannot trace."""
    found = []
    for layer in model.layers:
        path = prefix + layer.name
        if not TRACEABLE_NAME.fullmatch(layer.name):
            found.append(path)
        if isinstance(layer, keras.Model):
            found += _untraceable(layer, path + "/")
    return found


def _check_layer_names(name: str, model: Any) -> None:
    """Refuse at load a model whose layers would fail every trace through them."""
    untraceable = _untraceable(model)
    if untraceable:
        listed = ", ".join(quoted(path) for path in untraceable[:5])
        more = f" and {len(untraceable) - 5} more" if len(untraceable) > 5 else ""
        raise ModelLoadError(
            f"model {name}: TensorFlow cannot trace layers named {listed}{more} (a name may "
            "use letters, digits, _ . - and > before a letter, digit or dot); rename them "
            "in Keras and save the model again"
        )


def _check_input(name: str, model: Any) -> tuple[int | None, int]:
    """(fixed square side or None, channels) of a model's one image input, or ModelLoadError."""
    inputs = getattr(model, "inputs", None)
    if not isinstance(model, keras.Model) or not inputs:
        raise ModelLoadError(
            f"model {name}: not a Functional or Sequential Keras model (a subclassed model's "
            "layers cannot be cut at a layer); save it as a Functional model"
        )
    if len(inputs) != 1:
        raise ModelLoadError(
            f"model {name} takes {len(inputs)} inputs; only models with one image input can "
            "be visualized"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelLoadError(
            f"model {name}: its input has shape {shape}; an image model takes (batch, H, W, C)"
        )
    height, width, channels = shape[1:]
    if channels not in (1, 3):
        raise ModelLoadError(
            f"model {name}: its input has {channels} channels; 1 (grayscale) or 3 (RGB) work"
        )
    if height != width:
        raise ModelLoadError(
            f"model {name}: its input is fixed at {height}x{width}; square or free inputs work"
        )
    return height, int(channels)


def _load_file(config: ModelConfig) -> keras.Model:
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


class LoadedModel:
    """One resident network and the feature extractors built from it.

    A built-in (keras.applications, weights from `weights`) or, with a
    `config` that has a path, an operator's own model file. Identified by name
    and the sha256 of its file (the weights file for built-ins).
    """

    def __init__(
        self,
        name: str,
        weights: str,
        device: Device,
        seed: int = 0,
        config: ModelConfig | None = None,
    ) -> None:
        self.config = config or ModelConfig(name)
        self.name = self.config.name
        self.device = device
        self.preprocessing = self.config.preprocessing
        self.weights_source, self.weights_sha256 = weights, ""
        self._seed = seed
        self._variants: dict[Precision, keras.Model] = {}
        self._extractors: dict[tuple[str, Precision, bool, bool], keras.Model] = {}
        self._smallest: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        if self.config.builtin:
            if self.name not in MODEL_SPECS:
                raise UnknownModelError(
                    f"unknown model {quoted(self.name)}; valid models: "
                    + ", ".join(sorted(MODEL_SPECS)),
                    self.name,
                )
            self.spec: ModelSpec | None = MODEL_SPECS[self.name]
            with tf.device(device.name):
                self._variants[Precision.FLOAT32] = self._load(weights, seed)
        else:
            assert self.config.path is not None
            self.spec = None
            with tf.device(device.name):
                self._variants[Precision.FLOAT32] = _load_file(self.config)
            self.weights_source = self.config.path.name
            self.weights_sha256 = sha256_of(self.config.path)
        model = self._variants[Precision.FLOAT32]
        _check_layer_names(self.name, model)
        self.input_size, self.channels = _check_input(self.name, model)
        if not self.preprocessing.fits(self.channels):
            raise ModelLoadError(
                f"model {self.name}: preprocessing {self.preprocessing.describe()} does not fit "
                f"its {self.channels}-channel input"
            )
        try:
            features = _feature_layers(model)
            self.layers = self._introspect(model, features) if features else []
        except (AttributeError, TypeError, ValueError) as error:  # layers of several outputs...
            raise ModelLoadError(
                f"model {self.name}: its layers cannot be listed and cut ({error})"
            ) from error
        if not features:
            raise ModelLoadError(f"model {self.name} has no layer with an (H, W, C) output")
        self._tensors = {path: tensor for path, _, tensor in features}
        default = self.config.default_layer or (self.spec.default_layer if self.spec else None)
        self.default_layer = default or features[-1][0]
        self.layer(self.default_layer)  # a default layer that does not exist stops the start
        self.default_preset = self.config.default_preset
        # What the network was trained on: the robust preset feeds it this.
        self.training_preprocessing = (
            PREPROCESSING[self.spec.training_preprocessing] if self.spec else self.preprocessing
        )

    @property
    def cache_identity(self) -> str:
        """What of this model a picture depends on, for result-cache keys.

        The architecture (a built-in's name, or the file's sha256), its weights
        (file sha256, imagenet, or random with the seed), both preprocessings
        and the device (its model and instruction set: GPUs and CPUs of other
        kinds differ in the last bits, e.g. TF32 on recent GPUs).
        """
        if self.spec is not None:
            weights = self.weights_sha256 or self.weights_source
            if weights == "random":
                weights = f"random:{self._seed}"
            source = f"builtin:{self.name}:{weights}"
        else:
            source = f"file:{self.weights_sha256}"
        return "|".join(
            (
                source,
                self.preprocessing.describe(),
                self.training_preprocessing.describe(),
                self.device.description,
            )
        )

    @property
    def precisions(self) -> tuple[Precision, ...]:
        """The compute precisions it runs: built-ins both, files the dtypes they were saved in."""
        if self.spec is None:
            return (Precision.FLOAT32,)
        return (Precision.FLOAT32, Precision.BFLOAT16)

    def resolve_precision(self, precision: Precision | str) -> Precision:
        """AUTO as this model runs best here; a precision it cannot run is an error."""
        chosen = self.device.resolve(precision)
        if chosen not in self.precisions:
            if Precision(precision) is Precision.AUTO:
                return Precision.FLOAT32
            raise InvalidRequestError(
                f"model {self.name} runs in float32 only (a registered model keeps the dtypes "
                "it was saved with); ask for precision float32 or auto",
                "precision",
            )
        return chosen

    def parameter_bytes(self) -> int:
        """Bytes its weights take, over every precision variant built so far."""
        # From shapes and dtypes: copying every weight to the host just to size it is not needed.
        return sum(
            math.prod(weight.shape) * np.dtype(weight.dtype).itemsize
            for model in self._variants.values()
            for weight in model.weights
        )

    def activation_bytes(self, batch_pixels: int) -> int:
        """Estimated bytes of one batch of `batch_pixels` input pixels through every layer.

        Each (H, W, C) layer holds C / stride² float32 values per input pixel;
        the gradient pass needs as much again and the step's workspace about
        as much once more, hence x 3. An upper bound: a batch stops at its layer.
        """
        per_pixel = sum(layer.channels / layer.stride**2 for layer in self.layers)
        return int(batch_pixels * per_pixel * 4 * 3)

    def _load(self, weights: str, seed: int) -> keras.Model:
        assert self.spec is not None
        if weights == "random":
            keras.utils.set_random_seed(seed)
            return _construct(self.spec, None, Precision.FLOAT32)
        if weights == "imagenet":
            try:
                return _construct(self.spec, "imagenet", Precision.FLOAT32)
            except Exception as error:
                raise ModelLoadError(
                    f"could not load ImageNet weights for {self.name} ({error}). Keras downloads "
                    "them on first use; offline, pass --weights PATH to a .weights.h5 file"
                ) from error
        path = Path(weights)
        if not path.is_file():
            raise ModelLoadError(
                f"weights file not found: {path}. Pass --weights imagenet, random or an "
                "existing .weights.h5 path"
            )
        model = _construct(self.spec, None, Precision.FLOAT32)
        try:
            model.load_weights(str(path))
        except Exception as error:
            raise ModelLoadError(
                f"could not load {path} into {self.name}: {error}. The file must hold the "
                f"weights of keras.applications {self.name} with include_top=False"
            ) from error
        # Callers see the file's name and hash, never where it lives on this host.
        self.weights_source, self.weights_sha256 = path.name, sha256_of(path)
        return model

    def _introspect(
        self, model: keras.Model, features: list[tuple[str, Any, Any]]
    ) -> list[LayerInfo]:
        # One symbolic pass gives every layer's output size, hence its stride.
        probe = self.input_size or 224
        shapes = keras.Model(model.inputs[0], [t for _, _, t in features]).compute_output_shape(
            (1, probe, probe, self.channels)
        )
        shapes = shapes if isinstance(shapes, list) else [shapes]
        return [
            LayerInfo(
                path,
                type(layer).__name__,
                int(tensor.shape[-1]),
                max(1, round(probe / shape[1])) if shape[1] else 1,
                str(tensor.dtype),
            )
            for (path, layer, tensor), shape in zip(features, shapes, strict=True)
        ]

    def layer(self, name: str) -> LayerInfo:
        """The layer called `name`, or an error listing the valid ones."""
        for info in self.layers:
            if info.name == name:
                return info
        names = [info.name for info in self.layers]
        shown = ", ".join(names[:MAX_LISTED]) + (
            f", ... ({len(names)} in all: DescribeModel lists them)"
            if len(names) > MAX_LISTED
            else ""
        )
        raise InvalidRequestError(
            f"layer {quoted(name)} not found in {self.name}; valid layers: {shown}", "layer"
        )

    def _variant(self, precision: Precision) -> keras.Model:
        if precision not in self._variants:
            assert self.spec is not None  # files run in float32 only (resolve_precision)
            # Same weights, other compute dtype: build and copy, no reload.
            with tf.device(self.device.name):
                model = _construct(self.spec, None, precision)
                model.set_weights(self._variants[Precision.FLOAT32].get_weights())
            self._variants[precision] = model
        return self._variants[precision]

    def extractor(
        self,
        layer: str,
        precision: Precision,
        *,
        training_preprocessing: bool = False,
        pre_activation: bool = False,
    ) -> keras.Model:
        """The network truncated at `layer`, in `precision`, a preprocessing in front.

        The preprocessing is the model's configured one (none for built-ins,
        as the seeds fed them), or with `training_preprocessing` the one the
        network was trained with. With `pre_activation` the output is the
        layer's before its activation. Built once per combination, then cached.
        """
        self.layer(layer)
        key = (layer, precision, training_preprocessing, pre_activation)
        with self._lock:
            if key not in self._extractors:
                model = self._variant(precision)
                if pre_activation:
                    output = self._pre_activation(model, layer)
                elif precision is Precision.FLOAT32:
                    output = self._tensors[layer]
                else:
                    output = model.get_layer(layer).output
                cut = keras.Model(model.inputs[0], output)
                preprocessing = (
                    self.training_preprocessing if training_preprocessing else self.preprocessing
                )
                if not preprocessing.identity:
                    images = keras.Input((self.input_size, self.input_size, self.channels))
                    cut = keras.Model(images, cut(InputPreprocessing(preprocessing)(images)))
                self._extractors[key] = cut
            return self._extractors[key]

    def check_objective(self, layer: str, objective: str) -> None:
        """Refuse an objective this layer cannot give (before any work is queued).

        The pre-activation of a nested layer with an activation would need
        surgery inside the nested model, which is not done.
        """
        if objective != "pre_activation" or "/" not in layer:
            return
        nested = self._variants[Precision.FLOAT32]
        for part in layer.split("/"):
            nested = nested.get_layer(part)
        if isinstance(nested, ACTIVATION_LAYERS) or _fused_activation(nested):
            raise InvalidRequestError(
                f"objective pre_activation is not available for {layer}, an activation inside "
                "a nested model; ask for objective activation, or a layer of the outer model",
                "objective",
            )

    def _pre_activation(self, model: keras.Model, name: str) -> Any:
        """`name`'s output before its activation, as a tensor of `model`'s graph.

        An activation layer (ReLU...) gives its input; a layer with a fused
        activation (Conv2D(activation="relu")) a linear copy of itself, sharing
        the input and holding copies of its weights; any other layer its output.
        """
        if "/" in name:  # nested: served only where no surgery is needed (check_objective)
            return self._tensors[name]
        layer = model.get_layer(name)
        if isinstance(layer, ACTIVATION_LAYERS):
            return layer.input
        if not _fused_activation(layer):
            return layer.output
        config = {**layer.get_config(), "activation": "linear", "name": f"{name}_pre_activation"}
        linear = type(layer).from_config(config)
        output = linear(layer.input)
        linear.set_weights(layer.get_weights())
        return output

    def output_size(self, layer: str, input_size: int) -> tuple[int, int]:
        """Spatial size of `layer`'s output for a square input of `input_size` pixels.

        (0, 0) when the input is too small for the layer to be computed at all.
        """
        try:
            shape = self.extractor(layer, Precision.FLOAT32).compute_output_shape(
                (1, input_size, input_size, self.channels)
            )
        except ValueError:  # Keras: "Computed output size would be zero or negative"
            return 0, 0
        return int(shape[1]), int(shape[2])

    def smallest_input(self, layer: str, border: int = 0) -> int:
        """The smallest square input whose `layer` output keeps a pixel inside `border`."""
        key = (layer, border)
        if key not in self._smallest and self.input_size is not None:
            if min(self.output_size(layer, self.input_size)) < 1 + 2 * border:
                raise InvalidRequestError(
                    f"{layer} with border {border} has no pixel left at this model's fixed "
                    f"{self.input_size} px input; use a smaller border",
                    "border",
                )
            self._smallest[key] = self.input_size
        if key not in self._smallest:

            def fits(size: int) -> bool:
                return min(self.output_size(layer, size)) >= 1 + 2 * border

            high = 1
            while not fits(high):  # output size grows with the input: double, then bisect
                high *= 2
                if high > MAX_PROBE_SIZE:
                    raise InvalidRequestError(f"layer {quoted(layer)} cannot be computed", "layer")
            low = high // 2
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if fits(middle) else (middle, high)
            self._smallest[key] = high
        return self._smallest[key]

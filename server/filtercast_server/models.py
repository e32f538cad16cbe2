"""The networks the service visualizes: loading, introspection, feature extractors.

A model is loaded once (``imagenet`` through Keras' own download and cache, a
weights file, or seeded ``random`` weights), stays resident on its device, and
builds a feature extractor truncated at a layer on first use, cached per
(layer, precision).
"""

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filtercast_server.devices import Device
from filtercast_server.errors import (
    InvalidRequestError,
    ModelLoadError,
    UnknownModelError,
    quoted,
)
from filtercast_server.tf import keras, tf
from filtercast_server.work import Precision


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture from keras.applications."""

    build: Callable[..., keras.Model]
    default_layer: str


MODEL_SPECS: dict[str, ModelSpec] = {
    "vgg16": ModelSpec(keras.applications.VGG16, "block5_conv1"),
    "vgg19": ModelSpec(keras.applications.VGG19, "block5_conv1"),
    "resnet50v2": ModelSpec(keras.applications.ResNet50V2, "conv3_block4_out"),
}

MAX_PROBE_SIZE = 1 << 14  # no layer of an image model needs a larger input to be computed
POLICIES = {Precision.FLOAT32: "float32", Precision.BFLOAT16: "mixed_bfloat16"}
_policy_lock = threading.Lock()


@dataclass(frozen=True)
class LayerInfo:
    """A layer whose output is (H, W, C): where ascent can be run."""

    name: str
    type: str
    channels: int
    stride: int  # input pixels per output pixel


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


class LoadedModel:
    """One resident network and the feature extractors built from it."""

    def __init__(self, name: str, weights: str, device: Device, seed: int = 0) -> None:
        if name not in MODEL_SPECS:
            raise UnknownModelError(
                f"unknown model {quoted(name)}; valid models: {', '.join(sorted(MODEL_SPECS))}",
                name,
            )
        self.name = name
        self.spec = MODEL_SPECS[name]
        self.device = device
        self.weights_source, self.weights_sha256 = weights, ""
        self._variants: dict[Precision, keras.Model] = {}
        self._extractors: dict[tuple[str, Precision], keras.Model] = {}
        self._smallest: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        with tf.device(device.name):
            self._variants[Precision.FLOAT32] = self._load(weights, seed)
        self.layers = self._introspect(self._variants[Precision.FLOAT32])

    def _load(self, weights: str, seed: int) -> keras.Model:
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

    @staticmethod
    def _introspect(model: keras.Model) -> list[LayerInfo]:
        layers = [
            layer
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4
        ]
        # One symbolic pass at 224 px gives every layer's output size, hence its stride.
        probe = 224
        shapes = keras.Model(model.input, [layer.output for layer in layers]).compute_output_shape(
            (1, probe, probe, 3)
        )
        return [
            LayerInfo(
                layer.name,
                type(layer).__name__,
                int(layer.output.shape[-1]),
                max(1, round(probe / shape[1])),
            )
            for layer, shape in zip(layers, shapes, strict=True)
        ]

    def layer(self, name: str) -> LayerInfo:
        """The layer called `name`, or an error listing the valid ones."""
        for info in self.layers:
            if info.name == name:
                return info
        raise InvalidRequestError(
            f"layer {quoted(name)} not found in {self.name}; valid layers: "
            + ", ".join(info.name for info in self.layers),
            "layer",
        )

    def _variant(self, precision: Precision) -> keras.Model:
        if precision not in self._variants:
            # Same weights, other compute dtype: build and copy, no reload.
            with tf.device(self.device.name):
                model = _construct(self.spec, None, precision)
                model.set_weights(self._variants[Precision.FLOAT32].get_weights())
            self._variants[precision] = model
        return self._variants[precision]

    def extractor(self, layer: str, precision: Precision) -> keras.Model:
        """The network truncated at `layer`, in `precision` (built once, then cached)."""
        self.layer(layer)
        key = (layer, precision)
        with self._lock:
            if key not in self._extractors:
                model = self._variant(precision)
                self._extractors[key] = keras.Model(model.input, model.get_layer(layer).output)
            return self._extractors[key]

    def output_size(self, layer: str, input_size: int) -> tuple[int, int]:
        """Spatial size of `layer`'s output for a square input of `input_size` pixels.

        (0, 0) when the input is too small for the layer to be computed at all.
        """
        try:
            shape = self.extractor(layer, Precision.FLOAT32).compute_output_shape(
                (1, input_size, input_size, 3)
            )
        except ValueError:  # Keras: "Computed output size would be zero or negative"
            return 0, 0
        return int(shape[1]), int(shape[2])

    def smallest_input(self, layer: str, border: int = 0) -> int:
        """The smallest square input whose `layer` output keeps a pixel inside `border`."""
        key = (layer, border)
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

"""A loaded network: resident on its device, described, cut into feature extractors.

It is loaded once (see architectures.py) and builds a feature extractor
truncated at a layer (nested ones included, see introspection.py), with the
model's preprocessing in front, on first use, cached per (layer, precision).
"""

import logging
import math
import threading
from typing import Any

import numpy as np

from filtercast_server.engine.architectures import (
    MODEL_SPECS,
    InputPreprocessing,
    ModelSpec,
    construct,
    load_builtin,
    load_file,
    sha256_of,
)
from filtercast_server.engine.devices import Device
from filtercast_server.engine.introspection import (
    ACTIVATION_LAYERS,
    DenseInfo,
    LayerInfo,
    check_input,
    check_layer_names,
    dense_layers,
    describe_layers,
    feature_layers,
    fused_activation,
    softmax_input,
)
from filtercast_server.engine.tf import keras, tf
from filtercast_server.errors import (
    InvalidRequestError,
    ModelLoadError,
    UnknownModelError,
    quoted,
)
from filtercast_server.jobs import Precision
from filtercast_server.model_registry import PREPROCESSING, ModelConfig

MAX_LISTED = 40  # layers named in an error: its trailers stay well under gRPC's 8 KiB
MAX_PROBE_SIZE = 1 << 14  # no layer of an image model needs a larger input to be computed
log = logging.getLogger(__name__)


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
        self._extractors: dict[tuple[tuple[str, ...], Precision, bool, bool], keras.Model] = {}
        self._smallest: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.spec: ModelSpec | None = None
        with tf.device(device.name):
            model = self._load(weights, seed)
        self._variants[Precision.FLOAT32] = model
        check_layer_names(self.name, model)
        self.input_size, self.channels = check_input(self.name, model)
        if not self.preprocessing.fits(self.channels):
            raise ModelLoadError(
                f"model {self.name}: preprocessing {self.preprocessing.describe()} does not fit "
                f"its {self.channels}-channel input"
            )
        features, self.layers = self._list_layers(model)
        self._tensors = {path: tensor for path, _, tensor in features}
        dense = dense_layers(model)
        self.dense_layers: list[DenseInfo] = [info for info, _ in dense]
        self._tensors.update((info.name, tensor) for info, tensor in dense)
        default = self.config.default_layer or (self.spec.default_layer if self.spec else None)
        self.default_layer = default or features[-1][0]
        self.layer(self.default_layer)  # a default layer that does not exist stops the start
        self.default_preset = self.config.default_preset
        # What the network was trained on: the robust preset feeds it this.
        self.training_preprocessing = (
            PREPROCESSING[self.spec.training_preprocessing] if self.spec else self.preprocessing
        )

    def _load(self, weights: str, seed: int) -> keras.Model:
        """The network: a built-in with `weights`, or the configured file."""
        if not self.config.builtin:
            assert self.config.path is not None
            self.weights_source = self.config.path.name
            self.weights_sha256 = sha256_of(self.config.path)
            return load_file(self.config)
        if self.name not in MODEL_SPECS:
            raise UnknownModelError(
                f"unknown model {quoted(self.name)}; valid models: "
                + ", ".join(sorted(MODEL_SPECS)),
                self.name,
            )
        self.spec = MODEL_SPECS[self.name]
        model, self.weights_source, self.weights_sha256 = load_builtin(
            self.name, self.spec, weights, seed
        )
        return model

    def _list_layers(
        self, model: keras.Model
    ) -> tuple[list[tuple[str, Any, Any]], list[LayerInfo]]:
        """The (H, W, C) layers of `model` (see feature_layers) and their descriptions."""
        try:
            features = feature_layers(model)
            layers = describe_layers(model, features, self.input_size, self.channels)
        except (AttributeError, TypeError, ValueError) as error:  # layers of several outputs...
            raise ModelLoadError(
                f"model {self.name}: its layers cannot be listed and cut ({error})"
            ) from error
        if not features:
            raise ModelLoadError(f"model {self.name} has no layer with an (H, W, C) output")
        return features, layers

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

    def dense_layer(self, name: str) -> DenseInfo | None:
        """The (N, units) layer called `name`, or None."""
        return next((info for info in self.dense_layers if info.name == name), None)

    def widths(self, layers: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
        """Channels (or units) of each of `layers`."""
        return tuple(
            (name, dense.units if (dense := self.dense_layer(name)) else self.layer(name).channels)
            for name in layers
        )

    def _variant(self, precision: Precision) -> keras.Model:
        if precision not in self._variants:
            assert self.spec is not None  # files run in float32 only (resolve_precision)
            # Same weights, other compute dtype: build and copy, no reload.
            with tf.device(self.device.name):
                model = construct(self.spec, None, precision)
                model.set_weights(self._variants[Precision.FLOAT32].get_weights())
            self._variants[precision] = model
        return self._variants[precision]

    def extractor(
        self,
        layers: str | tuple[str, ...],
        precision: Precision,
        *,
        training_preprocessing: bool = False,
        pre_activation: bool = False,
    ) -> keras.Model:
        """The network truncated at `layers`, in `precision`, a preprocessing in front.

        One layer gives one output, several a list in their order. The
        preprocessing is the model's configured one (none for built-ins, as
        the seeds fed them), or with `training_preprocessing` the one the
        network was trained with. With `pre_activation` each output is the
        layer's before its activation; a dense layer ending in a softmax is
        always taken before it (its logits). Built once per combination, then cached.
        """
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        for name in names:
            if self.dense_layer(name) is None:
                self.layer(name)
        key = (names, precision, training_preprocessing, pre_activation)
        with self._lock:
            if key not in self._extractors:
                model = self._variant(precision)
                outputs = [self._output(model, name, precision, pre_activation) for name in names]
                cut = keras.Model(model.inputs[0], outputs[0] if len(outputs) == 1 else outputs)
                preprocessing = (
                    self.training_preprocessing if training_preprocessing else self.preprocessing
                )
                if not preprocessing.identity:
                    images = keras.Input((self.input_size, self.input_size, self.channels))
                    cut = keras.Model(images, cut(InputPreprocessing(preprocessing)(images)))
                self._extractors[key] = cut
            return self._extractors[key]

    def _output(self, model: keras.Model, name: str, precision: Precision, pre: bool) -> Any:
        """`name`'s output in `model` (its `precision` variant), pre-activation if `pre`."""
        dense = self.dense_layer(name) is not None
        if pre or (dense and softmax_input(model.get_layer(name))):
            return self._pre_activation(model, name)
        if precision is Precision.FLOAT32:
            return self._tensors[name]
        return model.get_layer(name).output

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
        if isinstance(nested, ACTIVATION_LAYERS) or fused_activation(nested):
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
        if isinstance(layer, (*ACTIVATION_LAYERS, keras.layers.Softmax)):
            return layer.input
        if not fused_activation(layer):
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

"""What a network's layers are: the ones ascent can run on, their strides, their names.

A layer inside a nested Functional/Sequential model is "outer/inner"; names
TensorFlow cannot trace, and inputs that are not one square image, are
refused when a model loads.
"""

import re
from dataclasses import dataclass
from typing import Any

from filtercast_server.engine.tf import keras
from filtercast_server.errors import ModelLoadError, quoted

# Layers that are an activation and nothing else: their pre-activation is their input.
ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)


@dataclass(frozen=True)
class LayerInfo:
    """A layer whose output is (H, W, C): where ascent can be run."""

    name: str  # "block3_conv2", or "backbone/block3_conv2" inside a nested model
    type: str
    channels: int
    stride: int  # input pixels per output pixel
    dtype: str = "float32"  # of its output


def feature_layers(model: keras.Model) -> list[tuple[str, Any, Any]]:
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
            inner = feature_layers(layer)
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


@dataclass(frozen=True)
class DenseInfo:
    """A layer whose output is (N, units): a classifier's logits, any dense layer."""

    name: str
    type: str
    units: int
    activation: str  # "softmax", "relu", "linear"...


def dense_layers(model: keras.Model) -> list[tuple[DenseInfo, Any]]:
    """Every top-level layer of `model` whose output is (N, units), with its output tensor."""
    found = []
    for layer in model.layers:
        output = getattr(layer, "output", None)
        if isinstance(layer, keras.layers.InputLayer) or output is None or isinstance(output, list):
            continue
        if len(output.shape) == 2 and output.shape[-1]:
            activation = getattr(layer, "activation", None)
            if isinstance(layer, keras.layers.Softmax):
                name = "softmax"
            else:
                name = (
                    getattr(activation, "__name__", "linear") if callable(activation) else "linear"
                )
            found.append(
                (DenseInfo(layer.name, type(layer).__name__, int(output.shape[-1]), name), output)
            )
    return found


def softmax_input(layer: Any) -> bool:
    """Whether `layer` ends in a softmax (fused, or a Softmax layer): its units are taken before."""
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def fused_activation(layer: Any) -> bool:
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


def check_layer_names(name: str, model: Any) -> None:
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


def check_input(name: str, model: Any) -> tuple[int | None, int]:
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


def describe_layers(
    model: keras.Model, features: list[tuple[str, Any, Any]], input_size: int | None, channels: int
) -> list[LayerInfo]:
    """Each of `features` (from feature_layers) as a LayerInfo, its stride measured."""
    if not features:
        return []
    # One symbolic pass gives every layer's output size, hence its stride.
    probe = input_size or 224
    shapes = keras.Model(model.inputs[0], [t for _, _, t in features]).compute_output_shape(
        (1, probe, probe, channels)
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

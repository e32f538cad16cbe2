"""Forward passes of real images: a layer's activation maps, as the network was trained.

The images get the model's *training* preprocessing (caffe for VGG, tf for
ResNet50V2, a registered model's configured one): a photograph means
nothing to VGG16 in the seeds' raw 0..255 RGB. One compiled function per
(model, layer, what it returns), any batch and image size (dimensions of
its signature, not retraces), float32: the maps of one image (AnalyzeImage),
or each channel's maximum and where it is over a batch (a dataset index),
which leaves the maps on the device. `receptive_field` measures which input
pixels a position of a layer sees.
"""

import threading
from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np

from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import tf
from filtercast_server.examples import ReceptiveField
from filtercast_server.jobs import Precision

Output = Literal["maps", "maxima"]


class LayerMaps:
    """Activation maps of model layers on single images (thread-safe)."""

    MAX_FUNCTIONS = 32  # (model, layer, output) kept compiled; the least recently used goes

    def __init__(self, models: Mapping[str, LoadedModel]) -> None:
        self.models = models
        self._functions: dict[tuple[str, str, Output], Callable[[tf.Tensor], object]] = {}
        self._fields: dict[tuple[str, str, int], ReceptiveField] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str, layer: str, image: np.ndarray) -> np.ndarray:
        """float32 (h, w, C) activations of `layer` on uint8 `image` (S, S, channels)."""
        loaded = self.models[model]
        function = self._function(loaded, layer, "maps")
        with tf.device(loaded.device.name):
            batch = tf.constant(image[None].astype(np.float32))
            return function(batch)[0].numpy()  # type: ignore[index]

    def maxima(
        self, model: str, layer: str, images: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Each channel's maximum over positions on uint8 `images` (B, S, S, channels).

        float32 (B, C) maxima, int32 (B, C) flat positions of them (the first
        in row-major order among equals) and the maps' (height, width).
        """
        loaded = self.models[model]
        function = self._function(loaded, layer, "maxima")
        with tf.device(loaded.device.name):
            found: tuple[tf.Tensor, tf.Tensor, tf.Tensor] = function(  # type: ignore[assignment]
                tf.constant(images.astype(np.float32))
            )
            values, positions, shape = found
            height, width = (int(v) for v in shape.numpy())
            return values.numpy(), positions.numpy(), (height, width)

    def _function(
        self, model: LoadedModel, layer: str, output: Output
    ) -> Callable[[tf.Tensor], object]:
        key = (model.name, layer, output)
        with self._lock:
            if key not in self._functions:
                extractor = model.extractor(layer, Precision.FLOAT32, training_preprocessing=True)
                signature = [tf.TensorSpec([None, None, None, model.channels], tf.float32)]

                @tf.function(input_signature=signature)
                def maps(images: tf.Tensor) -> tf.Tensor:
                    return tf.cast(extractor(images, training=False), tf.float32)

                @tf.function(input_signature=signature)
                def maxima(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                    found = maps(images)
                    shape = tf.shape(found)
                    flat = tf.reshape(found, [shape[0], shape[1] * shape[2], shape[3]])
                    positions = tf.argmax(flat, axis=1, output_type=tf.int32)
                    return tf.reduce_max(flat, axis=1), positions, shape[1:3]

                if len(self._functions) >= self.MAX_FUNCTIONS:
                    del self._functions[next(iter(self._functions))]
                self._functions[key] = maps if output == "maps" else maxima
            self._functions[key] = self._functions.pop(key)  # the most recently used last
            return self._functions[key]

    def receptive_field(self, model: str, layer: str, size: int) -> ReceptiveField:
        """The input pixels a position of `layer` sees, measured on a `size` px image.

        The gradient of the middle position's channels (summed) with respect
        to a random image is non-zero exactly on that position's field (a
        sum over every path: branches, dilations and padding included), so
        its bounding box gives the field's size and offset; the stride is
        the ratio of the image to the map. Measured once per (model, layer, size).
        """
        key = (model, layer, size)
        if key not in self._fields:
            if len(self._fields) >= self.MAX_FUNCTIONS:
                del self._fields[next(iter(self._fields))]
            self._fields[key] = self._measure_field(model, layer, size)
        return self._fields[key]

    def _measure_field(self, model: str, layer: str, size: int) -> ReceptiveField:
        """The field of two diagonal neighbours in the middle: its size, the stride between them.

        A field that reaches the image's edge is measured again on an image
        twice the size (when the model takes any size); still clipped, it is
        taken as the whole image, which every crop then is.
        """
        loaded = self.models[model]
        extractor = loaded.extractor(layer, Precision.FLOAT32, training_preprocessing=True)
        probes = (size,) if loaded.input_size else (size, 2 * size)
        for probe in probes:
            boxes, height = self._field_boxes(loaded, extractor, probe)
            if boxes is None:  # a layer blind to its input (all weights zero)
                break
            (top, left, bottom, right), (next_top, *_) = boxes
            if top > 0 and left > 0 and bottom < probe - 1 and right < probe - 1:
                stride = max(1, next_top - top)
                middle = height // 2
                extent = max(bottom - top, right - left) + 1
                return ReceptiveField(int(extent), int(stride), int(top - middle * stride))
        return ReceptiveField(3 * size, max(1, round(probe / height)), -size)

    @staticmethod
    def _field_boxes(
        loaded: LoadedModel, extractor: Callable[..., tf.Tensor], probe: int
    ) -> tuple[list[tuple[int, int, int, int]] | None, int]:
        """The boxes of the pixels reaching the middle position and its diagonal neighbour.

        Each is (top, left, bottom, right) on random `probe` px images (None:
        no pixel reaches), with the map's height. Two images per position, a
        square added to the sum: a channel a ReLU holds at 0 on one image
        still has a path on the other.
        """
        with tf.device(loaded.device.name):
            image = tf.random.stateless_uniform((4, probe, probe, loaded.channels), (0, 1), 0, 255)
            with tf.GradientTape() as tape:
                tape.watch(image)
                found = tf.cast(extractor(image, training=False), tf.float32)
                height = int(found.shape[1])
                middle = height // 2
                after = min(middle + 1, height - 1)
                chosen = tf.concat(
                    [found[:2, middle, middle, :], found[2:, after, after, :]], axis=0
                )
                total = tf.reduce_sum(chosen) + tf.reduce_sum(tf.square(chosen))
            reached = (tape.gradient(total, image) != 0).numpy().any(axis=3)
        boxes = []
        for seen in (reached[:2].any(axis=0), reached[2:].any(axis=0)):
            rows, columns = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
            if not len(rows):
                return None, height
            boxes.append((int(rows[0]), int(columns[0]), int(rows[-1]), int(columns[-1])))
        return boxes, height

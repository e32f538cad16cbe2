"""One forward pass of a user's image: a layer's activation maps, as the network was trained.

The image gets the model's *training* preprocessing (caffe for VGG, tf for
ResNet50V2, a registered model's configured one): a photograph means
nothing to VGG16 in the seeds' raw 0..255 RGB. One compiled function per
(model, layer), any image size (the size is a dimension of its signature,
not a retrace), float32.
"""

import threading
from collections.abc import Callable, Mapping

import numpy as np

from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import tf
from filtercast_server.jobs import Precision


class LayerMaps:
    """Activation maps of model layers on single images (thread-safe)."""

    MAX_FUNCTIONS = 32  # (model, layer) pairs kept compiled; the oldest goes

    def __init__(self, models: Mapping[str, LoadedModel]) -> None:
        self.models = models
        self._functions: dict[tuple[str, str], Callable[[tf.Tensor], tf.Tensor]] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str, layer: str, image: np.ndarray) -> np.ndarray:
        """float32 (h, w, C) activations of `layer` on uint8 `image` (S, S, channels)."""
        loaded = self.models[model]
        function = self._function(loaded, layer)
        with tf.device(loaded.device.name):
            batch = tf.constant(image[None].astype(np.float32))
            return function(batch)[0].numpy()

    def _function(self, model: LoadedModel, layer: str) -> Callable[[tf.Tensor], tf.Tensor]:
        key = (model.name, layer)
        with self._lock:
            if key not in self._functions:
                extractor = model.extractor(layer, Precision.FLOAT32, training_preprocessing=True)
                signature = [tf.TensorSpec([1, None, None, model.channels], tf.float32)]

                @tf.function(input_signature=signature)
                def maps(images: tf.Tensor) -> tf.Tensor:
                    return tf.cast(extractor(images, training=False), tf.float32)

                if len(self._functions) >= self.MAX_FUNCTIONS:
                    del self._functions[next(iter(self._functions))]
                self._functions[key] = maps
            return self._functions[key]

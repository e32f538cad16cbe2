"""Xplique 2.0.2's neuron feature visualization on ImageNet VGG16 (the peer).

Runs in Xplique's own environment (tensorflow==2.20.0,
tensorflow-probability[tf]==0.25.0, xplique==2.0.2 and its imports;
bench/objectives_bench.py calls it), never in filtercast's. VGG16 gets the
real weights and a caffe preprocessing layer in front, so it takes the 0..1
images Xplique optimizes; every VGG layer keeps its name, as Xplique finds
layers by name. The recipe is the library's default `optimize` (Fourier
parameterization, its standard transformations, Adam, 256 steps, pictures
optimized at 512 px and seen at the model's size) with `Objective.neuron`:
one channel of `block5_conv1` at the centre of its output, all neurons in
one batch. Writes the pictures as uint8 at the model's size, and the seconds.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from xplique.features_visualizations import Objective, optimize

CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR


def vgg16_on_unit_images(weights: str, size: int) -> keras.Model:
    """VGG16 (no top, real weights) taking RGB images in 0..1, its layers at the top level."""
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    vgg.load_weights(weights)
    images = keras.Input((size, size, 3))
    x = keras.layers.Lambda(lambda t: t[..., ::-1] * 255.0 - CAFFE_MEAN, name="caffe")(images)
    copies = []
    for layer in vgg.layers[1:]:  # fresh copies: a layer's .output must be on this graph
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copies.append((copy, layer))
    for copy, layer in copies:
        copy.set_weights(layer.get_weights())
    return keras.Model(images, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="VGG16 no-top ImageNet weights (.h5)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=16, help="channels 0..N-1")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--layer", default="block5_conv1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = vgg16_on_unit_images(args.weights, args.size)
    height, width, channels = model.get_layer(args.layer).output.shape[1:]
    centre = (height // 2) * width * channels + (width // 2) * channels  # flat (h, w, c) index
    objective = Objective.neuron(model, args.layer, [centre + c for c in range(args.channels)])
    tf.random.set_seed(0)
    started = time.perf_counter()
    images, _ = optimize(objective, nb_steps=args.steps)
    seconds = time.perf_counter() - started
    seen = tf.image.resize(images[-1], (args.size, args.size)).numpy()
    pictures = np.clip(np.round(seen * 255.0), 0, 255).astype(np.uint8)
    np.savez(args.out, pictures=pictures, seconds=seconds)


if __name__ == "__main__":
    main()

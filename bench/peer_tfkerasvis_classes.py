"""tf-keras-vis 0.8.7's class-score activation maximization on the digits classifier (the peer).

Runs in the peer's own environment (TensorFlow with tf-keras,
TF_USE_LEGACY_KERAS=1; bench/objectives_bench.py calls it), never in
filtercast's. The classifier of tests/support/digits.py is rebuilt layer for
layer in tf-keras and given the same weights; the recipe is the library's
headline example: ReplaceToLinear on the softmax, CategoricalScore of the ten
classes in one batch, ActivationMaximization's defaults (Jitter, Rotate2D,
TotalVariation2D + Norm, RMSprop) with the input range the model was trained
on (0..1). Writes the pictures as uint8 and the seconds they took.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tf_keras_vis.activation_maximization import ActivationMaximization
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import CategoricalScore


def classifier(weights: list[np.ndarray]) -> tf.keras.Model:
    """tests/support/digits.py's architecture, in tf-keras, with its weights."""
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            layers.Input((32, 32, 1)),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.set_weights(weights)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-npz", required=True, help="the classifier's weights, in order")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    stored = np.load(args.weights_npz)
    model = classifier([stored[f"w{i}"] for i in range(len(stored.files))])
    visualize = ActivationMaximization(model, model_modifier=ReplaceToLinear(), clone=True)
    pictures, started = [], time.perf_counter()
    for seed in range(args.seeds):
        tf.random.set_seed(seed)
        values = visualize(
            CategoricalScore(list(range(10))),
            seed_input=tf.random.uniform((10, 32, 32, 1), 0.0, 1.0, seed=seed),
            steps=args.steps,
            input_range=(0.0, 1.0),
        )
        pictures.append(np.clip(np.asarray(values) * 255.0, 0, 255).astype(np.uint8))
    seconds = time.perf_counter() - started
    np.savez(args.out, pictures=np.concatenate(pictures), seconds=seconds)


if __name__ == "__main__":
    main()

"""tf-keras-vis 0.8.7's default activation maximization on VGG16 filters (the peer).

Runs in the peer's own environment (TensorFlow with tf-keras, TF_USE_LEGACY_KERAS=1;
bench/quality_bench.py creates it and calls this script), never in filtercast's.
Its recipe is the library's documented default for conv filters: the layer cut
out with ExtractIntermediateLayer, its ReLU replaced by linear (ReplaceToLinear),
CategoricalScore per filter, and ActivationMaximization's own defaults (Jitter 4 +
Rotate2D 1, TotalVariation2D 1.0 + Norm(0.3, p=1), RMSprop(1.0, 0.999), input
range 0..255), one batch of all filters. The pictures at each snapshot step are
what the library returns (clipped to 0..255) as uint8; the seconds are
wall-clock since the first step.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tf_keras_vis.activation_maximization import ActivationMaximization
from tf_keras_vis.activation_maximization.callbacks import Callback
from tf_keras_vis.utils.model_modifiers import (
    ExtractIntermediateLayer,
    ReplaceToLinear,
)
from tf_keras_vis.utils.scores import CategoricalScore


class Snapshots(Callback):
    """Keeps the pictures and the elapsed time at chosen steps."""

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps
        self.started = time.perf_counter()
        self.taken: dict[int, tuple[float, np.ndarray]] = {}

    def __call__(self, i, values, grads, scores, model_outputs, **kwargs) -> None:
        """Keep step i's pictures when i + 1 is a snapshot step."""
        if i + 1 in self.steps:
            pictures = np.clip(np.asarray(values[0]), 0, 255).astype(np.uint8)
            self.taken[i + 1] = (time.perf_counter() - self.started, pictures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-npz", required=True, help="VGG16 no-top weights, in order")
    parser.add_argument("--filters", required=True, help="comma-separated indices")
    parser.add_argument("--layer", default="block5_conv1")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--snapshots", default="25,50,100,200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    filters = [int(i) for i in args.filters.split(",")]
    snapshots = {int(s) for s in args.snapshots.split(",")}
    model = tf.keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(args.size, args.size, 3)
    )
    stored = np.load(args.weights_npz)
    model.set_weights([stored[f"w{i}"] for i in range(len(stored.files))])

    visualizer = ActivationMaximization(
        model,
        model_modifier=[ExtractIntermediateLayer(args.layer), ReplaceToLinear()],
        clone=False,
    )
    rng = np.random.default_rng(args.seed)
    seed_input = rng.uniform(0, 255, (len(filters), args.size, args.size, 3)).astype(np.float32)
    callback = Snapshots(snapshots)
    visualizer(
        CategoricalScore(filters),
        seed_input=tf.constant(seed_input),
        steps=max(snapshots),
        callbacks=[callback],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "peer.npz", **{f"step{s}": pics for s, (_, pics) in callback.taken.items()}
    )
    timings = {str(s): seconds for s, (seconds, _) in callback.taken.items()}
    (args.out / "peer.json").write_text(
        json.dumps({"filters": filters, "seconds": timings, "tensorflow": tf.__version__})
    )


if __name__ == "__main__":
    main()

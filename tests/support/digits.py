"""Small digit classifiers trained on scikit-learn's bundled digits (no download).

The 8x8 digits are scaled to 32x32 grayscale in 0..255 (the models divide by
255 themselves: preprocessing "unit"); two models trained with different
seeds are the "same data, independent training" pair that transferability
is measured on. Shared by the engine tests and bench/quality_bench.py.
"""

from pathlib import Path

import numpy as np

SIDE = 32


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 1), labels (N,)) of scikit-learn's 1,797 digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = digits.images / 16.0  # 0..1 at 8x8
    large = np.kron(small, np.ones((SIDE // 8, SIDE // 8)))
    return (large[..., None] * 255).astype(np.uint8), digits.target.astype(np.int32)


def train_classifier(path: Path, seed: int, epochs: int = 12) -> float:
    """Train a small CNN on the digits, save it to `path` (.keras); its held-out accuracy."""
    from filtercast_server.engine.tf import keras

    keras.utils.set_random_seed(seed)
    images, labels = digit_images()
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order].astype(np.float32) / 255.0, labels[order]
    held_out = len(images) // 5
    inputs = keras.Input((SIDE, SIDE, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    model = keras.Model(inputs, x)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[held_out:], labels[held_out:], epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(images[:held_out], labels[:held_out], verbose=0)
    model.save(path)
    return float(accuracy)


def classify(path: Path, pictures: np.ndarray) -> np.ndarray:
    """The class a saved classifier gives each uint8 (N, 32, 32, 1) picture."""
    from filtercast_server.engine.tf import keras

    model = keras.saving.load_model(path, compile=False)
    return model.predict(pictures.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)

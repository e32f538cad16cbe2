"""Plain-numpy references of the native kernels, for tests and benchmarks.

They define what the native module must compute. Image statistics are taken
in float64: the seeds' own float32 ``x.mean()`` drifts on constant or
large-offset images (a constant 1e6 image does not come out mid-gray), while
the formula's intent, and the native module, is exact.
"""

from collections.abc import Sequence

import numpy as np

SEED_EPS = 1e-7


def deprocess(
    images: np.ndarray, std: float = 0.1, crop: int = 0, eps: float = SEED_EPS
) -> np.ndarray:
    """The seeds' deprocessing of one (H, W, C) image or an (N, H, W, C) batch (C = 3 or 1)."""
    x = np.asarray(images, dtype=np.float64)
    axes = (-3, -2, -1)
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + eps)
    x = x * std
    if crop:
        x = x[..., crop:-crop, crop:-crop, :]
    x = x + 0.5
    x = np.clip(x, 0, 1)
    x = x * 255
    return x.astype(np.uint8)


def deprocess_seed_float32(image: np.ndarray, std: float = 0.1) -> np.ndarray:
    """The classic seed's deprocess_image, verbatim, on one float32 image."""
    x = np.array(image, dtype=np.float32)
    x -= x.mean()
    x /= x.std() + SEED_EPS
    x *= std
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    return np.clip(x, 0, 255).astype("uint8")


def process(
    images: np.ndarray,
    mean: float | np.ndarray,
    std: float | np.ndarray,
    target_std: float,
) -> np.ndarray:
    """(x / 255 - 0.5) / target_std * std + mean, per image, as float32."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4:
        mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1, 1)
        std = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1, 1)
    return ((x / 255 - 0.5) / target_std * std + mean).astype(np.float32)


def sigmoid_pixels(images: np.ndarray, mix: np.ndarray, crop: int = 0) -> np.ndarray:
    """Each pixel's channels mixed by `mix`, a sigmoid, x 255 rounded half away from 0, cropped."""
    x = np.asarray(images, dtype=np.float64)
    mixed = np.einsum("ij,...j->...i", np.asarray(mix, dtype=np.float64), x)
    if crop:
        mixed = mixed[..., crop:-crop, crop:-crop, :]
    value = 255.0 / (1.0 + np.exp(-mixed))
    return np.floor(value + 0.5).astype(np.uint8)


def stitch(
    images: np.ndarray, order: Sequence[int] | None = None, n: int = 8, margin: int = 5
) -> np.ndarray:
    """Row-major n x n grid of images[order[i]] with black margins."""
    count, height, width, channels = images.shape
    order = list(range(count)) if order is None else list(order)
    grid = np.zeros(
        (n * height + (n - 1) * margin, n * width + (n - 1) * margin, channels), dtype=np.uint8
    )
    for position, index in enumerate(order[: n * n]):
        top = (position // n) * (height + margin)
        left = (position % n) * (width + margin)
        grid[top : top + height, left : left + width] = images[index]
    return grid

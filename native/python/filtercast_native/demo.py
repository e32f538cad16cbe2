"""A small demo of the native kernels: deprocess a batch of patterns and stitch a grid.

python -m filtercast_native.demo --out demo-output
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import filtercast_native as native


def synthetic_batch(count: int, size: int, seed: int) -> np.ndarray:
    """Float32 images of oriented stripes plus noise, in the ascent's value range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = np.empty((count, size, size, 3), dtype=np.float32)
    for i in range(count):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 12)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        phase = rng.uniform(0, 2 * np.pi, 3)
        images[i] = 128 + 20 * (wave[..., None] * np.cos(phase)) + rng.normal(0, 4, (size, size, 3))
    return images


def main() -> None:
    """Write grid.png built by deprocess + stitch into --out."""
    parser = argparse.ArgumentParser(description="filtercast native kernels demo")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    images = native.deprocess(synthetic_batch(args.n * args.n, args.size, seed=0))
    grid = native.stitch(images, n=args.n, margin=5)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "grid.png"
    Image.fromarray(grid).save(path)
    print(f"wrote {path} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()

"""Native kernels vs their plain-numpy references, side by side in one run.

Workloads are the seeds': deprocess of 64 images of 128x128 (classic) and of
412x412 (upscale), and an 8x8 grid of 412-px images; and the robust preset's
sigmoid_pixels of 64 images of 128x128. Run:

    .venv/bin/python bench/native_bench.py [--repeats 20] [--json PATH]
"""

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np

import filtercast_native as native
from filtercast_native import reference


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def seed_deprocess_batch(images: np.ndarray) -> list[np.ndarray]:
    """What the seeds do: their float32 deprocess_image, one image at a time."""
    return [reference.deprocess_seed_float32(image) for image in images]


def numpy_sigmoid_pixels(images: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """The robust preset's last step as one would write it in float32 numpy."""
    mixed = images @ mix.T.astype(np.float32)
    return np.rint(255.0 / (1.0 + np.exp(-mixed))).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    small = (rng.standard_normal((64, 128, 128, 3)) * 30 + 128).astype(np.float32)
    large = (rng.standard_normal((64, 412, 412, 3)) * 30 + 128).astype(np.float32)
    tiles = rng.integers(0, 256, (64, 412, 412, 3), dtype=np.uint8)
    order = rng.permutation(64).tolist()
    spectra_images = (rng.standard_normal((64, 128, 128, 3)) * 1.5).astype(np.float32)
    mix = np.array([[0.56, 0.19, 0.04], [0.58, 0.0, -0.11], [0.58, -0.19, 0.06]])

    cases = [
        (
            "deprocess 64x128x128",
            lambda: native.deprocess(small),
            lambda: seed_deprocess_batch(small),
            lambda: reference.deprocess(small),
        ),
        (
            "deprocess 64x412x412",
            lambda: native.deprocess(large, std=0.25),
            lambda: seed_deprocess_batch(large),
            lambda: reference.deprocess(large, std=0.25),
        ),
        (
            "sigmoid_pixels 64x128x128",
            lambda: native.sigmoid_pixels(spectra_images, mix),
            lambda: numpy_sigmoid_pixels(spectra_images, mix),
            lambda: reference.sigmoid_pixels(spectra_images, mix),
        ),
        (
            "stitch 8x8 of 412px",
            lambda: native.stitch(tiles, order, n=8),
            lambda: reference.stitch(tiles, order, n=8),
            None,
        ),
    ]
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.machine()}, cores available: {cores}")
    print(f"native threads: {native.get_num_threads()}")
    header = f"{'workload':<26}{'native ms':>11}{'numpy ms':>11}{'ratio':>8}"
    header += f"{'f64 ref ms':>12}{'ratio':>8}"
    print(header)
    results = []
    for name, run_native, run_numpy, run_ref64 in cases:
        repeats = args.repeats if "128" in name else max(3, args.repeats // 4)
        t_native = best_of(run_native, repeats)
        t_numpy = best_of(run_numpy, repeats)
        t_ref64 = best_of(run_ref64, repeats) if run_ref64 else None
        row = f"{name:<26}{t_native * 1e3:>11.2f}{t_numpy * 1e3:>11.2f}{t_numpy / t_native:>7.1f}x"
        if t_ref64 is not None:
            row += f"{t_ref64 * 1e3:>12.2f}{t_ref64 / t_native:>7.1f}x"
        print(row)
        results.append(
            {
                "workload": name,
                "native_s": t_native,
                "numpy_s": t_numpy,
                "ratio": t_numpy / t_native,
                "float64_reference_s": t_ref64,
            }
        )
    print("numpy = the seeds' float32 code (deprocess) or numpy slicing (stitch);")
    print("f64 ref = filtercast_native.reference, the float64 definition the tests use")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""Every bad input to the native kernels raises a clear ValueError/TypeError."""

import threading
import time

import numpy as np
import pytest

import filtercast_native as native

GOOD = np.zeros((2, 8, 8, 3), dtype=np.float32)
GOOD_U8 = np.zeros((4, 8, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: native.deprocess(GOOD.astype(np.int32)), TypeError, "floating-point array"),
        (lambda: native.deprocess(np.array(["a"])), TypeError, "floating-point"),
        (lambda: native.deprocess(np.zeros((8, 8), np.float32)), ValueError, "rank 2"),
        (lambda: native.deprocess(np.zeros((1, 2, 8, 8, 3), np.float32)), ValueError, "rank 5"),
        (lambda: native.deprocess(np.zeros((2, 8, 8, 4), np.float32)), ValueError, "3 channels"),
        (lambda: native.stitch(np.zeros((4, 8, 8, 2), np.uint8), n=2), ValueError, "1 (grayscale)"),
        (lambda: native.deprocess(np.zeros((0, 8, 8, 3), np.float32)), ValueError, "empty batch"),
        (lambda: native.deprocess(np.zeros((1, 0, 8, 3), np.float32)), ValueError, "empty image"),
        (lambda: native.deprocess(GOOD, crop=4), ValueError, "crop must be <= 3"),
        (lambda: native.deprocess(GOOD, crop=-1), ValueError, "crop must be >= 0"),
        (lambda: native.deprocess(GOOD, std=0), ValueError, "std must be a finite number > 0"),
        (lambda: native.deprocess(GOOD, std=float("nan")), ValueError, "std must be"),
        (lambda: native.deprocess(GOOD, eps=-1), ValueError, "eps must be"),
        (lambda: native.deprocess(GOOD, threads=0), ValueError, "threads must be >= 1"),
        (lambda: native.process(GOOD, 0, 1, target_std=0.25), TypeError, "uint8"),
        (
            lambda: native.process(GOOD_U8.astype(np.uint16), 0, 1, target_std=0.25),
            TypeError,
            "uint8",
        ),
        (lambda: native.process(GOOD_U8, 0, 1, target_std=0), ValueError, "target_std"),
        (
            lambda: native.process(GOOD_U8, [0, 1], 1, target_std=0.25),
            ValueError,
            "one value per image (4)",
        ),
        (lambda: native.process(GOOD_U8, 0, -1, target_std=0.25), ValueError, "std must be >= 0"),
        (
            lambda: native.process(GOOD_U8, float("inf"), 1, target_std=0.25),
            ValueError,
            "mean must be finite",
        ),
        (lambda: native.stitch(GOOD_U8, n=3), ValueError, "needs 9 images, got 4; n must be <= 2"),
        (lambda: native.stitch(GOOD_U8, n=0), ValueError, "n must be >= 1"),
        (lambda: native.stitch(GOOD_U8, n=2, margin=-1), ValueError, "margin must be >= 0"),
        (lambda: native.stitch(GOOD_U8, [0, 1, 2], n=2), ValueError, "order has 3 entries"),
        (
            lambda: native.stitch(GOOD_U8, [0, 1, 2, 4], n=2),
            ValueError,
            "order[3] = 4 is out of range",
        ),
        (
            lambda: native.stitch(GOOD_U8, [0, -1, 2, 3], n=2),
            ValueError,
            "valid image indices are 0..3",
        ),
        (lambda: native.stitch(GOOD_U8[0], n=1), ValueError, "shape (N, H, W, C)"),
        (lambda: native.stitch(GOOD, n=1), TypeError, "uint8"),
        (lambda: native.sigmoid_pixels(GOOD_U8, np.eye(3)), TypeError, "floating-point"),
        (lambda: native.sigmoid_pixels(GOOD, np.eye(1)), ValueError, "mix must have shape (3, 3)"),
        (lambda: native.sigmoid_pixels(GOOD, np.ones(3)), ValueError, "got shape (3,)"),
        (
            lambda: native.sigmoid_pixels(GOOD, np.full((3, 3), np.nan)),
            ValueError,
            "mix must be finite",
        ),
        (
            lambda: native.sigmoid_pixels(GOOD, np.full((3, 3), 1e300)),
            ValueError,
            "within float32's range",
        ),
        (lambda: native.sigmoid_pixels(GOOD, np.eye(3), crop=4), ValueError, "crop must be <= 3"),
        (lambda: native.sigmoid_pixels(GOOD, np.eye(3), crop=-2), ValueError, "crop must be >= 0"),
        (lambda: native.sigmoid_pixels(GOOD, np.eye(3), threads=0), ValueError, "threads"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=None) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_pixels_are_rejected_naming_the_image(bad: float) -> None:
    images = np.ones((3, 8, 8, 3), dtype=np.float32)
    images[2, 4, 5, 1] = bad
    with pytest.raises(ValueError, match=r"non-finite values .* in image 2"):
        native.deprocess(images)
    with pytest.raises(ValueError, match=r"non-finite values .* in image 2"):
        native.sigmoid_pixels(images, np.eye(3))


def longest_pause_during_a_call(images: np.ndarray) -> tuple[float, float]:
    """(longest time this thread could not run, the call's own duration) for one call
    made on another thread, both measured during that same call."""
    done = threading.Event()
    seconds = []

    def call() -> None:
        start = time.perf_counter()
        native.deprocess(images, threads=1)
        seconds.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=call)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    longest = max(longest, time.perf_counter() - last)  # a pause the loop never saw end
    worker.join()
    return longest, seconds[0]


def test_the_gil_is_released_while_computing() -> None:
    """A call holding the GIL would stop this thread for the whole call, every time.

    Released, this thread runs on, pausing only when the OS schedules it out: a
    busy machine can stretch one pause, not every one of several tries.
    """
    images = np.random.default_rng(0).random((64, 300, 300, 3), dtype=np.float32)
    tries = [longest_pause_during_a_call(images) for _ in range(5)]
    assert any(pause < call / 2 for pause, call in tries), tries

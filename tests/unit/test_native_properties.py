"""Property tests: the native kernels against their plain-numpy references."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import filtercast_native as native
from filtercast_native import reference

MAX_VALUES = 1_500_000  # per generated batch, to keep the suite fast


@st.composite
def float_batches(draw: st.DrawFn) -> np.ndarray:
    """(N, H, W, C) float32 batches: 1-300 px, 1-64 images, C = 3 (RGB) or 1 (grayscale),
    values from 1e-6 to 1e6."""
    height = draw(st.integers(1, 300))
    width = draw(st.integers(1, 300))
    channels = draw(st.sampled_from([3, 1]))
    max_n = max(1, min(64, MAX_VALUES // (height * width * channels)))
    n = draw(st.integers(1, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.floats(-6, 6))
    offset = draw(st.sampled_from([0.0, 0.5, -1.0, 128.0])) * scale
    kind = draw(st.sampled_from(["uniform", "normal", "constant", "mixed"]))
    shape = (n, height, width, channels)
    if kind == "uniform":
        x = offset + scale * rng.random(shape)
    elif kind == "normal":
        x = offset + scale * rng.standard_normal(shape)
    elif kind == "constant":
        x = np.full(shape, offset + scale)
    else:  # some images constant (std 0), the rest noise
        x = offset + scale * rng.standard_normal(shape)
        x[rng.random(n) < 0.5] = scale
    return x.astype(np.float32)


def assert_within_one_lsb(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.uint8
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max(initial=0) <= 1, f"max difference {diff.max()} LSB"


@given(float_batches(), st.floats(0.01, 1.0), st.data())
def test_deprocess_matches_reference(images: np.ndarray, std: float, data: st.DataObject) -> None:
    crop = data.draw(st.integers(0, (min(images.shape[1:3]) - 1) // 2))
    assert_within_one_lsb(
        native.deprocess(images, std=std, crop=crop),
        reference.deprocess(images, std=std, crop=crop),
    )


@given(float_batches())
# Found by hypothesis: folding the mean into an offset lost the 0.5 at 4e7.
@example(np.full((1, 1, 1, 3), 4.067858e07, dtype=np.float32))
def test_constant_images_come_out_mid_gray(images: np.ndarray) -> None:
    images[:] = images[:, :1, :1, :1]  # every image constant
    out = native.deprocess(images)
    assert np.all(out == 127)


@given(st.integers(0, 2**32 - 1), st.sampled_from([0.1, 0.25, 0.15]))
def test_deprocess_matches_the_seed_code_on_seed_like_images(seed: int, std: float) -> None:
    # What the seeds feed it: noise around 128 after a few ascent steps.
    rng = np.random.default_rng(seed)
    images = (128 + 20 * rng.standard_normal((3, 64, 64, 3))).astype(np.float32)
    out = native.deprocess(images, std=std)
    for image, got in zip(images, out, strict=True):
        assert_within_one_lsb(got, reference.deprocess_seed_float32(image, std=std))


def test_deprocess_keeps_a_single_image_unbatched() -> None:
    image = np.random.default_rng(0).random((20, 30, 3), dtype=np.float32)
    out = native.deprocess(image, crop=2)
    assert out.shape == (16, 26, 3)
    assert_within_one_lsb(out, reference.deprocess(image, crop=2))


def test_deprocess_eps_is_used() -> None:
    # std 1e-6: eps 1e-7 leaves most of the contrast, eps 1e-5 flattens it.
    image = (np.random.default_rng(1).standard_normal((8, 8, 3)) * 1e-6).astype(np.float32)
    assert np.ptp(native.deprocess(image, eps=1e-7)) > 40
    assert np.ptp(native.deprocess(image, eps=1e-5)) < 20
    assert_within_one_lsb(native.deprocess(image, eps=1e-5), reference.deprocess(image, eps=1e-5))


@pytest.mark.parametrize(
    "make_view",
    [
        lambda x: x[:, ::2, ::3],  # strided
        lambda x: np.asfortranarray(x),  # Fortran order
        lambda x: x.transpose(0, 2, 1, 3),  # axes swapped
        lambda x: x.astype(np.float64),  # other float dtype
        lambda x: x.astype(np.float16),
    ],
    ids=["strided", "fortran", "transposed", "float64", "float16"],
)
def test_deprocess_reads_any_layout_correctly(make_view) -> None:
    base = (np.random.default_rng(2).standard_normal((4, 40, 30, 3)) * 5).astype(np.float32)
    view = make_view(base)
    assert_within_one_lsb(native.deprocess(view), reference.deprocess(np.asarray(view)))


@given(st.data())
def test_process_matches_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 16))
    height, width = data.draw(st.integers(1, 120)), data.draw(st.integers(1, 120))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    images = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    mean = rng.uniform(-1e3, 1e3, n)
    std = rng.uniform(0, 1e3, n)
    target_std = data.draw(st.floats(0.01, 1.0))
    got = native.process(images, mean, std, target_std=target_std)
    want = reference.process(images, mean, std, target_std)
    assert got.dtype == np.float32 and got.shape == images.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.max(np.abs(want))))


def test_process_accepts_scalar_statistics_and_inverts_deprocess() -> None:
    rng = np.random.default_rng(3)
    image = (rng.standard_normal((50, 50, 3)) * 7 + 40).astype(np.float32)
    mean, std = float(image.mean()), float(image.std())
    restored = native.process(native.deprocess(image, std=0.25), mean, std, target_std=0.25)
    # Within the quantisation of uint8 (1/255 of 4 std) where nothing was clipped.
    unclipped = np.abs(image - mean) < 2 * std
    assert np.max(np.abs(restored - image)[unclipped]) <= 4 * std / 255 + 1e-4


@given(st.data())
def test_stitch_matches_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 6))
    count = data.draw(st.integers(n * n, n * n + 5))
    height, width = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    margin = data.draw(st.integers(0, 12))
    channels = data.draw(st.sampled_from([3, 1]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    images = rng.integers(0, 256, (count, height, width, channels), dtype=np.uint8)
    order = data.draw(st.lists(st.integers(0, count - 1), min_size=n * n, max_size=n * n + 3))
    got = native.stitch(images, order, n=n, margin=margin)
    np.testing.assert_array_equal(got, reference.stitch(images, order, n=n, margin=margin))
    side = (n * height + (n - 1) * margin, n * width + (n - 1) * margin)
    assert got.shape == (*side, channels)


def test_stitch_default_order_is_row_major_with_black_margins() -> None:
    images = np.stack([np.full((2, 3, 3), v, dtype=np.uint8) for v in (10, 20, 30, 40)])
    grid = native.stitch(images, n=2, margin=1)
    assert grid.shape == (5, 7, 3)
    assert (
        grid[0, 0, 0] == 10 and grid[0, 4, 0] == 20 and grid[3, 0, 0] == 30 and grid[3, 4, 0] == 40
    )
    assert np.all(grid[2, :, :] == 0) and np.all(grid[:, 3, :] == 0)


@st.composite
def color_mixes(draw: st.DrawFn, channels: int) -> np.ndarray:
    """(C, C) mixing matrices with entries in -2..2."""
    values = st.floats(-2.0, 2.0, allow_nan=False, width=32)
    return np.array(
        draw(st.lists(values, min_size=channels * channels, max_size=channels * channels))
    ).reshape(channels, channels)


@given(float_batches(), st.data())
def test_sigmoid_pixels_matches_reference(images: np.ndarray, data: st.DataObject) -> None:
    # Spectra's images sit near 0; keep the values where the sigmoid is not flat.
    images = np.clip(images, -50, 50)
    mix = data.draw(color_mixes(images.shape[-1]))
    crop = data.draw(st.integers(0, (min(images.shape[1:3]) - 1) // 2))
    assert_within_one_lsb(
        native.sigmoid_pixels(images, mix, crop=crop),
        reference.sigmoid_pixels(images, mix, crop=crop),
    )


def test_sigmoid_pixels_known_values() -> None:
    # 0 -> 128 (0.5 rounded), large -> 255, very negative -> 0 (a mix with positive rows).
    mix = np.array([[0.5, 0.2, 0.1], [0.5, 0.4, 0.1], [0.5, 0.2, 0.3]])
    images = np.zeros((1, 2, 2, 3), np.float32)
    images[0, 0, 0] = 100.0
    images[0, 0, 1] = -100.0
    out = native.sigmoid_pixels(images, mix)
    assert out[0, 1, 1].tolist() == [128, 128, 128]
    assert out[0, 0, 0].min() >= 250 and out[0, 0, 1].max() <= 5
    # Finite pixels whose float32 mix overflows (inf - inf = NaN) still give a byte.
    huge = np.full((1, 1, 1, 3), 3e38, np.float32)
    overflow = np.array([[2.0, -2.0, 0.0], [1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    assert native.sigmoid_pixels(huge, overflow)[0, 0, 0].tolist() == [0, 255, 0]
    # The identity mix is a plain per-channel sigmoid.
    gray = np.linspace(-6, 6, 13, dtype=np.float32).reshape(1, 13, 1, 1)
    expected = np.floor(255 / (1 + np.exp(-gray.astype(np.float64))) + 0.5)
    assert native.sigmoid_pixels(gray, np.eye(1)).ravel().tolist() == expected.ravel().tolist()


@given(float_batches())
def test_thread_count_never_changes_the_bytes(images: np.ndarray) -> None:
    one = native.deprocess(images, threads=1)
    many = native.deprocess(images, threads=7)
    assert one.tobytes() == many.tobytes()
    u8 = one
    means, stds = np.arange(len(u8), dtype=np.float64), np.full(len(u8), 2.0)
    assert (
        native.process(u8, means, stds, target_std=0.25, threads=1).tobytes()
        == native.process(u8, means, stds, target_std=0.25, threads=5).tobytes()
    )
    mix = np.eye(images.shape[-1]) * 0.5
    assert (
        native.sigmoid_pixels(images / 1e6, mix, threads=1).tobytes()
        == native.sigmoid_pixels(images / 1e6, mix, threads=4).tobytes()
    )
    n = int(np.sqrt(len(u8)))
    assert (
        native.stitch(u8, n=n, threads=1).tobytes() == native.stitch(u8, n=n, threads=3).tobytes()
    )


def test_default_thread_count_is_settable() -> None:
    before = native.get_num_threads()
    assert before >= 1
    try:
        native.set_num_threads(3)
        assert native.get_num_threads() == 3
    finally:
        native.set_num_threads(before)

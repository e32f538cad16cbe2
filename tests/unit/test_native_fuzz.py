"""Fuzz the native module: any array, any parameters; a result or a clean error, never a crash."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import filtercast_native as native

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.uint8,
    np.int8,
    np.int64,
    np.uint16,
    np.bool_,
    np.complex64,
]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9)
    )
)
layouts = st.sampled_from(["as is", "fortran", "reversed", "strided"])


def lay_out(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "reversed" and array.ndim:
        return array[::-1]
    if layout == "strided" and array.ndim:
        return array[::2]
    return array


numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40)


@settings(max_examples=400, deadline=None)
@given(arrays, layouts, numbers, st.integers(-5, 10), numbers, st.none() | st.integers(-2, 9))
def test_deprocess_never_crashes(array, layout, std, crop, eps, threads) -> None:
    try:
        out = native.deprocess(lay_out(array, layout), std=std, crop=crop, eps=eps, threads=threads)
    except (ValueError, TypeError):
        return
    assert out.dtype == np.uint8


@settings(max_examples=300, deadline=None)
@given(arrays, layouts, numbers | st.lists(numbers, max_size=4), numbers, numbers)
def test_process_never_crashes(array, layout, mean, std, target_std) -> None:
    try:
        out = native.process(lay_out(array, layout), mean, std, target_std=target_std)
    except (ValueError, TypeError, OverflowError):
        return
    assert out.dtype == np.float32 and out.shape == array.shape


@settings(max_examples=300, deadline=None)
@given(
    arrays,
    layouts,
    st.none() | st.lists(st.integers(-(2**40), 2**40), max_size=10),
    st.integers(-3, 4),
    st.integers(-3, 6),
)
def test_stitch_never_crashes(array, layout, order, n, margin) -> None:
    try:
        out = native.stitch(lay_out(array, layout), order, n=n, margin=margin)
    except (ValueError, TypeError, OverflowError):
        return
    assert out.dtype == np.uint8 and out.ndim == 3

"""Type stubs of the compiled filtercast_native._core module."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__version__: str

def deprocess(
    images: npt.ArrayLike,
    *,
    std: float = 0.1,
    crop: int = 0,
    eps: float = 1e-7,
    threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def process(
    images: npt.ArrayLike,
    mean: float | npt.ArrayLike,
    std: float | npt.ArrayLike,
    *,
    target_std: float,
    threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def sigmoid_pixels(
    images: npt.ArrayLike,
    mix: npt.ArrayLike,
    *,
    crop: int = 0,
    threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def stitch(
    images: npt.ArrayLike,
    order: Sequence[int] | None = None,
    *,
    n: int,
    margin: int = 5,
    threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def set_num_threads(threads: int) -> None: ...
def get_num_threads() -> int: ...

"""filtercast's compiled image kernels.

``deprocess`` turns the float images produced by gradient ascent into uint8
pictures with the seeds' formula, ``process`` maps uint8 pictures back to the
float range (the upscale preset's step between rounds), ``sigmoid_pixels``
turns the robust preset's images (colour mix, sigmoid) into uint8 and
``stitch`` lays pictures out in a grid. All four release the GIL and spread a batch over
threads; :mod:`filtercast_native.reference` holds plain-numpy equivalents.
"""

from filtercast_native._core import (
    __version__,
    deprocess,
    get_num_threads,
    process,
    set_num_threads,
    sigmoid_pixels,
    stitch,
)

__all__ = [
    "__version__",
    "deprocess",
    "get_num_threads",
    "process",
    "set_num_threads",
    "sigmoid_pixels",
    "stitch",
]

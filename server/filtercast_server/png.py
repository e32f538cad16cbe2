"""PNG in and out of uint8 (H, W, C) arrays: the wire's and the cache's one format."""

import io
import struct

import numpy as np
from PIL import Image

COMPRESS_LEVEL = 1  # fast: pictures are small and mostly noise-free; size barely moves


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) or (H, W, 1) picture as PNG (RGB or grayscale)."""
    buffer = io.BytesIO()
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=COMPRESS_LEVEL)
    return buffer.getvalue()


SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_CHANNELS = {0: 1, 2: 3}  # PNG colour types this module writes: grayscale, RGB


def png_shape(data: bytes) -> tuple[int, int, int]:
    """(H, W, C) from the header alone, without decoding.

    ValueError unless an 8-bit RGB or grayscale PNG (what png_bytes writes).
    """
    if len(data) < 33 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    depth, colour = data[24], data[25]
    if depth != 8 or colour not in COLOUR_CHANNELS:
        raise ValueError(f"a PNG of bit depth {depth}, colour type {colour}")
    return height, width, COLOUR_CHANNELS[colour]


def png_pixels(data: bytes) -> np.ndarray:
    """The uint8 (H, W, C) picture of PNG `data` (grayscale as C = 1); ValueError if not one."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.format != "PNG" or picture.mode not in ("RGB", "L"):
                raise ValueError(f"not an RGB or grayscale PNG ({picture.format} {picture.mode})")
            pixels = np.asarray(picture)
    # PIL's errors for truncated, foreign or oversized bytes.
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"unreadable PNG: {error}") from error
    return pixels[..., None] if pixels.ndim == 2 else pixels

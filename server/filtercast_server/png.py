"""PNG in and out of uint8 (H, W, C) arrays: the wire's and the cache's one format."""

import io

import numpy as np
from PIL import Image

COMPRESS_LEVEL = 1  # fast: pictures are small and mostly noise-free; size barely moves


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) or (H, W, 1) picture as PNG (RGB or grayscale)."""
    buffer = io.BytesIO()
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=COMPRESS_LEVEL)
    return buffer.getvalue()


def png_pixels(data: bytes) -> np.ndarray:
    """The uint8 (H, W, C) picture of PNG `data` (grayscale as C = 1); ValueError if not one."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.format != "PNG" or picture.mode not in ("RGB", "L"):
                raise ValueError(f"not an RGB or grayscale PNG ({picture.format} {picture.mode})")
            pixels = np.asarray(picture)
    except (OSError, SyntaxError) as error:  # PIL's errors for truncated or foreign bytes
        raise ValueError(f"unreadable PNG: {error}") from error
    return pixels[..., None] if pixels.ndim == 2 else pixels

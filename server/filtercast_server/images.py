"""A user's image, checked before it is decoded, then brought to what the network sees.

Every image a client sends (or a dataset folder holds) goes through
`decode_image`: its byte size, its format by magic bytes (PNG and JPEG
only), its declared dimensions from the header (a decompression bomb is
refused before a pixel is allocated), then a decode by Pillow restricted to
those two formats, with EXIF orientation applied and every colour mode
(grayscale, alpha, palette, CMYK, 16-bit) brought to 8-bit RGB. Anything
that fails is an ImageError (an InvalidRequestError naming the field) whose
message says what to change. `square_view` then resizes the shorter side to
the requested size and crops the centre: what the network is shown.
"""

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from filtercast.contract import MAX_IMAGE_BYTES
from filtercast_server.errors import InvalidRequestError

MAX_IMAGE_PIXELS = 40_000_000  # declared width x height; more is refused unread
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
FORMATS = tuple(MAGIC.values())
ALPHA_BACKGROUND = (128, 128, 128)  # transparency shows as mid-gray: no colour of its own

# Pillow's own limits, set here rather than inherited: a bomb beyond our check
# still fails inside Pillow, a truncated file is an error (never silently
# grey), and PNG text chunks cannot hold more than a request may be.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024


class ImageError(InvalidRequestError):
    """The image cannot be used (INVALID_ARGUMENT on its field)."""


@dataclass(frozen=True)
class DecodedImage:
    """8-bit RGB pixels, and what the file was."""

    pixels: np.ndarray  # uint8 (H, W, 3), upright
    format: str  # PNG or JPEG
    mode: str  # Pillow's mode of the file (L, RGBA, P, CMYK, I;16, ...)
    width: int  # of the file, before orientation
    height: int


def image_format(data: bytes, field: str = "image") -> str:
    """PNG or JPEG by the file's first bytes, or ImageError naming what it is not."""
    for magic, name in MAGIC.items():
        if data.startswith(magic):
            return name
    raise ImageError(
        f"{field} is not a PNG or JPEG file (its first bytes are {data[:8].hex() or 'empty'}); "
        "send PNG or JPEG bytes",
        field,
    )


def decode_image(
    data: bytes,
    field: str = "image",
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    shrink_to: int = 0,
) -> DecodedImage:
    """The checked, decoded, upright 8-bit RGB image in `data` (ImageError if it is not one).

    `shrink_to` > 0 lets a JPEG decode at 1/2, 1/4 or 1/8 scale while its
    shorter side stays at least that (JPEG's own draft mode: a large photo
    costs a fraction of its full decode).
    """
    if len(data) > max_bytes:
        raise ImageError(f"{field} is {len(data)} bytes; at most {max_bytes}", field)
    kind = image_format(data, field)
    size = declared_size(data, kind)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(
            f"{field} declares {size[0]}x{size[1]} pixels; at most {max_pixels} "
            "(shrink it before sending)",
            field,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=[kind])
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{field} declares {width}x{height} pixels; at most {max_pixels} "
                    "(shrink it before sending)",
                    field,
                )
            if kind == "JPEG" and shrink_to > 0:
                opened.draft("RGB", _draft_size(width, height, shrink_to))
            mode = opened.mode
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            pixels = _rgb(upright)
    except ImageError:
        raise
    except Exception as error:  # Pillow raises many kinds: every one is a bad file
        raise ImageError(
            f"{field} could not be decoded as {kind}: {type(error).__name__}: "
            f"{str(error)[:200]}; send an intact PNG or JPEG file",
            field,
        ) from error
    return DecodedImage(pixels, kind, mode, width, height)


def declared_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from the file's header, read without Pillow (None: no header found).

    PNG: the IHDR chunk that must come first. JPEG: the first start-of-frame
    segment, found by walking the segments' lengths (bounded by the data).
    """
    if kind == "PNG":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    return None


def _draft_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """The smallest size Pillow's JPEG draft may pick that keeps the shorter side >= `shorter`."""
    scale = max(1.0, min(width, height) / shorter)
    return max(1, int(width / scale)), max(1, int(height / scale))


def _rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode as uint8 (H, W, 3): alpha over mid-gray, 16-bit and float scaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def square_view(pixels: np.ndarray, size: int) -> np.ndarray:
    """The centre square of the image, resized (Lanczos) to `size` x `size`.

    The square is cut before anything is resized: an image of extreme shape
    (10 000 000 x 1 px passes every size check) costs its square, never the
    whole image scaled up.
    """
    height, width = pixels.shape[:2]
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    image = Image.fromarray(pixels)
    if side == size:
        return np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.uint8)
    box = (left, top, left + side, top + side)
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS, box=box), np.uint8)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) as a model with `channels` inputs takes it: 1 is luminance."""
    if channels == 1:
        return np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.uint8)[..., None]
    return pixels

"""A user's image is checked before it is decoded, and anything wrong is ImageError on its field."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from filtercast_server.images import (
    ALPHA_BACKGROUND,
    MAX_IMAGE_PIXELS,
    ImageError,
    decode_image,
    square_view,
    to_channels,
)

RNG = np.random.default_rng(0)
PHOTO = (RNG.random((48, 64, 3)) * 255).astype(np.uint8)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares width x height (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_png_and_jpeg_decode_to_upright_rgb() -> None:
    png = decode_image(encoded(Image.fromarray(PHOTO), "PNG"))
    assert png.format == "PNG" and png.mode == "RGB" and (png.width, png.height) == (64, 48)
    assert np.array_equal(png.pixels, PHOTO)
    jpeg = decode_image(encoded(Image.fromarray(PHOTO), "JPEG", quality=95))
    assert jpeg.format == "JPEG" and jpeg.pixels.shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not a PNG or JPEG file (its first bytes are empty)"),
        (b"GIF89a" + b"\x00" * 40, "not a PNG or JPEG file (its first bytes are 474946"),
        (encoded(Image.fromarray(PHOTO), "BMP"), "not a PNG or JPEG"),
        (encoded(Image.fromarray(PHOTO), "WEBP"), "not a PNG or JPEG"),
        (png_declaring(100_000, 100_000), "declares 100000x100000 pixels; at most"),
        (png_declaring(MAX_IMAGE_PIXELS // 1000 + 1, 1000), "pixels; at most"),
        (encoded(Image.fromarray(PHOTO), "PNG")[:60], "could not be decoded as PNG"),
        (encoded(Image.fromarray(PHOTO), "JPEG")[:300], "could not be decoded as JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\xff" * 64, "could not be decoded as PNG"),
    ],
)
def test_bad_images_are_refused_with_what_to_change(data: bytes, words: str) -> None:
    with pytest.raises(ImageError) as refused:
        decode_image(data, "image")
    assert words in str(refused.value) and refused.value.field == "image"


def test_the_byte_limit_is_checked_before_anything_else() -> None:
    with pytest.raises(ImageError, match="is 1001 bytes; at most 1000"):
        decode_image(b"\x89PNG" + b"\x00" * 997, max_bytes=1000)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_colour_mode_becomes_8_bit_rgb(mode: str) -> None:
    source = Image.fromarray(PHOTO)
    if mode == "I;16":
        image = Image.fromarray(PHOTO[..., 0].astype(np.uint16) * 257)
    elif mode == "LA":
        image = source.convert("LA")
    else:
        image = source.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encoded(image, fmt))
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (48, 64, 3)
    assert decoded.mode == mode
    if mode == "I;16":  # 16-bit scaled to 8, not clipped
        assert np.abs(decoded.pixels[..., 0].astype(int) - PHOTO[..., 0]).max() <= 1


def test_transparency_shows_as_mid_gray() -> None:
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert (decode_image(encoded(clear, "PNG")).pixels == ALPHA_BACKGROUND).all()


def test_exif_orientation_is_applied() -> None:
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # white at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: "rotate 90 CW to view"
    data = encoded(Image.fromarray(tall), "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data)
    assert decoded.pixels.shape == (20, 40, 3)  # upright: landscape
    assert (decoded.width, decoded.height) == (20, 40)  # as stored
    assert decoded.pixels[:, -10:].mean() > 200 and decoded.pixels[:, :10].mean() < 50


def test_a_large_jpeg_decodes_in_draft_mode_but_never_below_the_size_asked() -> None:
    big = np.kron(PHOTO, np.ones((16, 16, 1), np.uint8))  # 768 x 1024
    data = encoded(Image.fromarray(big), "JPEG", quality=90)
    small = decode_image(data, shrink_to=100)
    assert min(small.pixels.shape[:2]) >= 100 and small.pixels.shape[0] < 768
    assert decode_image(data).pixels.shape == (768, 1024, 3)


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(["PNG", "JPEG"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=8),
)
def test_truncated_or_corrupted_files_decode_or_are_refused_never_anything_else(
    fmt: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(encoded(Image.fromarray(PHOTO), fmt))
    for where, xor in flips:
        data[int(where * (len(data) - 1))] ^= xor
    data = data[: max(1, int(cut * len(data)))] if cut < 1.0 else data
    try:
        decoded = decode_image(bytes(data))
    except ImageError as refused:
        assert refused.field == "image"
    else:
        assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 3
        assert decoded.pixels.shape[2] == 3


@pytest.mark.parametrize(("shape", "size"), [((48, 64), 32), ((64, 48), 32), ((20, 30), 64)])
def test_the_square_view_is_the_centre_of_the_shorter_side_at_size(shape, size) -> None:
    pixels = np.zeros((*shape, 3), np.uint8)
    h, w = shape
    pixels[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 255  # a dot at the centre
    view = square_view(pixels, size)
    assert view.shape == (size, size, 3)
    y, x = np.unravel_index(view[..., 0].argmax(), (size, size))
    assert abs(y - size / 2) <= size / 8 and abs(x - size / 2) <= size / 8


def test_one_channel_models_see_luminance() -> None:
    gray = to_channels(PHOTO, 1)
    assert gray.shape == (48, 64, 1)
    expected = np.asarray(Image.fromarray(PHOTO).convert("L"))
    assert np.array_equal(gray[..., 0], expected)
    assert to_channels(PHOTO, 3) is PHOTO


def test_a_jpeg_bomb_is_refused_from_its_frame_header() -> None:
    data = bytearray(encoded(Image.fromarray(PHOTO), "JPEG"))
    frame = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[frame + 5 : frame + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(ImageError, match="declares 60000x60000 pixels"):
        decode_image(bytes(data))

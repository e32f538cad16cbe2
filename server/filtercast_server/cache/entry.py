"""One cached filter as bytes: a checked header, then the picture as PNG.

    b"FCR1" | header length (u32 LE) | JSON header | PNG (absent for a dead filter)

The header holds the outcome's numbers, the picture's length and a CRC-32 of
the PNG, so a truncated or altered entry is found before it is served; the
PNG's own header must give the picture size the request expects. Entries
come from a disk or a Redis others may write: nothing in one is trusted
before it is checked, and nothing is decoded here.
"""

import json
import struct
import zlib

from filtercast_server.png import png_bytes, png_shape
from filtercast_server.work import FilterOutcome

MAGIC = b"FCR1"  # a new layout takes a new magic: entries of other layouts are misses
_LENGTH = struct.Struct("<I")
MAX_HEADER_BYTES = 4096


class CorruptEntryError(ValueError):
    """Stored bytes that are not a whole, intact entry of this layout."""


class ForeignEntryError(ValueError):
    """Bytes of another entry layout (another version's): a miss, not a fault."""


def pack(outcome: FilterOutcome) -> bytes:
    """`outcome` as an entry, its picture encoded as PNG."""
    body = png_bytes(outcome.image) if outcome.image is not None else b""
    header = json.dumps(
        {
            "index": outcome.index,
            "loss": outcome.loss,
            "dead": outcome.dead,
            "steps": outcome.steps,
            "seconds": outcome.seconds,
            "revived": outcome.revived,
            "crc32": zlib.crc32(body),
            "length": len(body),
        }
    ).encode()
    return MAGIC + _LENGTH.pack(len(header)) + header + body


def unpack(blob: bytes, index: int | None, shape: tuple[int, int, int] | None) -> FilterOutcome:
    """The outcome of filter `index` stored in `blob`, its picture left as PNG.

    `shape` is the (H, W, C) its picture must have; None for either checks
    only the entry itself (a lookup by key alone). CorruptEntryError for
    anything that is not exactly such an entry; ForeignEntryError for
    another layout's.
    """
    if len(blob) < len(MAGIC) + _LENGTH.size:
        raise CorruptEntryError("entry is truncated")
    if not blob.startswith(MAGIC):
        raise ForeignEntryError(f"entry layout {blob[:4]!r}, not {MAGIC!r}")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if length > MAX_HEADER_BYTES or start + length > len(blob):
        raise CorruptEntryError("entry header is truncated or oversized")
    body = blob[start + length :]
    try:
        header = json.loads(blob[start : start + length])
        outcome = FilterOutcome(
            index=int(header["index"]),
            loss=float(header["loss"]),
            dead=bool(header["dead"]),
            image=None,
            steps=int(header["steps"]),
            seconds=float(header["seconds"]),
            revived=int(header["revived"]),
            cached=True,
            png=body or None,
        )
        crc, stored_length = int(header["crc32"]), int(header["length"])
    except Exception as error:  # any shape of garbage: JSON too deep, inf, wrong types...
        raise CorruptEntryError(f"entry header is unreadable: {type(error).__name__}") from error
    if len(body) != stored_length or zlib.crc32(body) != crc:
        raise CorruptEntryError("entry picture is truncated or altered (CRC mismatch)")
    if index is not None and outcome.index != index:
        raise CorruptEntryError(f"entry holds filter {outcome.index}, not {index}")
    if outcome.dead == bool(body):
        raise CorruptEntryError("entry's picture and its dead flag disagree")
    if body and shape is not None:
        try:
            found = png_shape(body)
        except ValueError as error:
            raise CorruptEntryError(f"entry picture: {error}") from error
        if found != shape:
            raise CorruptEntryError(f"entry picture is {found}, not {shape}")
    return outcome

"""One cached filter as bytes: a checked header, then the picture as PNG.

    b"FCR1" | header length (u32 LE) | JSON header | PNG (absent for a dead filter)

The header holds the outcome's numbers, the picture's length and a CRC-32 of
the PNG, so a truncated or altered entry is found before it is served.
"""

import json
import struct
import zlib

from filtercast_server.png import png_bytes
from filtercast_server.work import FilterOutcome

MAGIC = b"FCR1"
_LENGTH = struct.Struct("<I")
MAX_HEADER_BYTES = 4096


class CorruptEntryError(ValueError):
    """Stored bytes that are not a whole, intact entry."""


def pack(outcome: FilterOutcome, png: bytes | None = None) -> bytes:
    """`outcome` as an entry; its picture encoded as PNG unless `png` already is it."""
    if png is None and outcome.image is not None:
        png = png_bytes(outcome.image)
    body = png or b""
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


def unpack(blob: bytes) -> FilterOutcome:
    """The outcome stored in `blob`, its picture left as PNG (`png`), or CorruptEntryError."""
    if len(blob) < len(MAGIC) + _LENGTH.size or not blob.startswith(MAGIC):
        raise CorruptEntryError("not a filtercast cache entry")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if length > MAX_HEADER_BYTES or start + length > len(blob):
        raise CorruptEntryError("entry header is truncated or oversized")
    try:
        header = json.loads(blob[start : start + length])
        body = blob[start + length :]
        if len(body) != header["length"] or zlib.crc32(body) != header["crc32"]:
            raise CorruptEntryError("entry picture is truncated or altered (CRC mismatch)")
        return FilterOutcome(
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
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, CorruptEntryError):
            raise
        raise CorruptEntryError(f"entry header is unreadable: {error}") from error

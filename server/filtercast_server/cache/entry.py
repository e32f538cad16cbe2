"""One cached filter as bytes: authenticated, then checked field by field.

    b"FCR2" | tag (32 bytes) | header length (u32 LE) | JSON header | PNG (absent when dead)

The tag is an HMAC-SHA256, under the cache's secret, of the cache key and
every byte after the tag: an entry moved to another key, or written by
anyone without the secret (another tenant of a shared Redis), fails it.
Nothing of an entry is read before its tag is checked. Then every field is
checked against what the request expects (the filter's index, the ranges of
steps, seconds, loss and restarts, the header's exact set of fields), and the
picture is decoded in full: it must be a PNG of the expected size and mode.
Anything else is a CorruptEntryError, and the server computes the filter.
"""

import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from filtercast_server.jobs import FilterOutcome
from filtercast_server.png import png_bytes, png_pixels, png_shape

MAGIC = b"FCR2"  # a new layout takes a new magic: entries of other layouts are misses
TAG_BYTES = hashlib.sha256().digest_size
_LENGTH = struct.Struct("<I")
PREFIX_BYTES = len(MAGIC) + TAG_BYTES + _LENGTH.size
MAX_HEADER_BYTES = 4096
# A 2048 px RGB picture stored uncompressed is 12.6 MB; anything larger is not ours,
# and backends read at most this much of a value.
MAX_ENTRY_BYTES = 16 * 1024**2
DOMAIN = b"filtercast.result.v2\0"  # tags of this layout mean nothing to any other use
FIELDS = frozenset(("index", "loss", "dead", "steps", "seconds", "revived", "length", "expires"))
MAX_INDEX = 2**31 - 1  # FilterResult.index is an int32
MAX_LOSS = float(np.finfo(np.float32).max)  # FilterResult.loss is a float32
MAX_SECONDS = 1e6  # a filter's compute time; eleven days is no real one
MAX_RESTARTS = 8  # the most revive allows
MAX_STEPS = 2**31 - 1
MAX_PICTURE_PIXELS = 2048**2  # a picture looked up by key alone is decoded up to this size

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every PNG ends with
Shape = tuple[int, int, int]


class CorruptEntryError(ValueError):
    """Stored bytes that are not a whole, intact entry of this layout."""


class ForgedEntryError(CorruptEntryError):
    """An entry of the right length whose tag does not verify: not written under our secret."""


class ForeignEntryError(ValueError):
    """Bytes of another entry layout (another version's): a miss, not a fault."""


@dataclass(frozen=True)
class Expectation:
    """What a request knows its cached filter must be.

    `index` and `shape` None check the entry alone (a picture asked for by
    its key); `max_steps` and `max_restarts` are the plan's bounds.
    """

    index: int | None = None
    shape: Shape | None = None
    max_steps: int = MAX_STEPS
    max_restarts: int = MAX_RESTARTS


@dataclass(frozen=True)
class Stored:
    """A verified entry: the outcome (pixels decoded, PNG kept) and when it expires."""

    outcome: FilterOutcome
    expires: float  # Unix seconds; 0: never


class EntryCodec:
    """Packs and checks entries under one secret (see the module docstring)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a cache secret needs at least 16 bytes")
        self._secret = secret

    def tag(self, key: str, signed: bytes) -> bytes:
        """The HMAC-SHA256 of `key` and the `signed` bytes of an entry under this secret."""
        return hmac.new(self._secret, DOMAIN + key.encode() + signed, hashlib.sha256).digest()

    def pack(self, key: str, outcome: FilterOutcome, expires: float = 0.0) -> bytes:
        """`outcome` as the entry for `key`, its picture encoded as PNG.

        ValueError for an outcome no reader would accept (a NaN loss, say):
        storing it would only make every later lookup a fault.
        """
        if outcome.image is not None:
            body = outcome.png if outcome.png is not None else png_bytes(outcome.image)
        else:
            body = b""
        header = {
            "index": outcome.index,
            "loss": outcome.loss,
            "dead": outcome.dead,
            "steps": outcome.steps,
            "seconds": outcome.seconds,
            "revived": outcome.revived,
            "length": len(body),
            "expires": round(expires),
        }
        _check_header(header, Expectation(index=outcome.index))
        text = json.dumps(header).encode()
        signed = _LENGTH.pack(len(text)) + text + body
        return MAGIC + self.tag(key, signed) + signed

    def unpack(self, key: str, blob: bytes, expect: Expectation) -> Stored:
        """The verified outcome stored under `key`, marked cached, its pixels decoded.

        ForeignEntryError for another layout's bytes; CorruptEntryError
        (ForgedEntryError when the tag fails on an entry of the right length)
        for anything else that is not exactly what `expect` describes.
        """
        if not blob.startswith(MAGIC):
            if len(blob) >= len(MAGIC):
                raise ForeignEntryError(f"entry layout {blob[:4]!r}, not {MAGIC!r}")
            raise CorruptEntryError("entry is truncated")
        if len(blob) > MAX_ENTRY_BYTES:
            raise CorruptEntryError(f"entry of {len(blob)} bytes, over {MAX_ENTRY_BYTES}")
        tag, signed = blob[len(MAGIC) : len(MAGIC) + TAG_BYTES], blob[len(MAGIC) + TAG_BYTES :]
        if len(tag) != TAG_BYTES or not hmac.compare_digest(tag, self.tag(key, signed)):
            # Refused either way; the kind only tells an operator what happened.
            if _whole(blob):
                raise ForgedEntryError("entry tag does not verify under this cache's secret")
            raise CorruptEntryError("entry is truncated")
        (length,) = _LENGTH.unpack_from(signed)
        start = _LENGTH.size
        if length > MAX_HEADER_BYTES:
            raise CorruptEntryError(f"entry header of {length} bytes, over {MAX_HEADER_BYTES}")
        try:
            header = json.loads(signed[start : start + length])
        except (ValueError, RecursionError) as error:
            raise CorruptEntryError(f"entry header is not JSON: {type(error).__name__}") from error
        _check_header(header, expect)
        body = signed[start + length :]
        if len(body) != header["length"]:
            raise CorruptEntryError(f"entry picture of {len(body)} bytes, not {header['length']}")
        pixels = _picture(body, expect.shape) if body else None
        outcome = FilterOutcome(
            index=header["index"],
            loss=float(header["loss"]),
            dead=header["dead"],
            image=pixels,
            steps=header["steps"],
            seconds=float(header["seconds"]),
            revived=header["revived"],
            cached=True,
            png=body or None,
        )
        return Stored(outcome, float(header["expires"]))


def _whole(blob: bytes) -> bool:
    """Whether the lengths an entry declares add up to its size (else it was cut short)."""
    if len(blob) < PREFIX_BYTES:
        return False
    (length,) = _LENGTH.unpack_from(blob, PREFIX_BYTES - _LENGTH.size)
    if length > MAX_HEADER_BYTES or PREFIX_BYTES + length > len(blob):
        return False
    try:
        declared = json.loads(blob[PREFIX_BYTES : PREFIX_BYTES + length])["length"]
    except Exception:  # only classifies an entry already refused
        return False
    return isinstance(declared, int) and PREFIX_BYTES + length + declared == len(blob)


def _integer(header: dict, name: str, low: int, high: int) -> int:
    value = header[name]
    if type(value) is not int or not low <= value <= high:
        raise CorruptEntryError(f"entry {name} {str(value)[:40]} is not an integer {low}..{high}")
    return value


def _number(header: dict, name: str, low: float, high: float) -> float:
    value = header[name]
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise CorruptEntryError(f"entry {name} {str(value)[:40]} is not a number in {low}..{high}")
    return float(value)


def _check_header(header: object, expect: Expectation) -> None:
    """CorruptEntryError unless `header` has exactly our fields, each in its range."""
    if not isinstance(header, dict) or set(header) != FIELDS:
        found = sorted(header)[:10] if isinstance(header, dict) else type(header).__name__
        raise CorruptEntryError(f"entry header fields {found}, not {sorted(FIELDS)}")
    index = _integer(header, "index", 0, MAX_INDEX)
    if expect.index is not None and index != expect.index:
        raise CorruptEntryError(f"entry holds filter {index}, not {expect.index}")
    if type(header["dead"]) is not bool:
        raise CorruptEntryError("entry dead flag is not true or false")
    _integer(header, "steps", 1, expect.max_steps)
    _integer(header, "revived", 0, expect.max_restarts)
    _integer(header, "length", 0, MAX_ENTRY_BYTES)
    _integer(header, "expires", 0, 2**63 - 1)
    _number(header, "loss", -MAX_LOSS, MAX_LOSS)
    _number(header, "seconds", 0.0, MAX_SECONDS)
    if header["dead"] == bool(header["length"]):
        raise CorruptEntryError("entry's picture and its dead flag disagree")


def _picture(body: bytes, shape: Shape | None) -> np.ndarray:
    """The pixels of an entry's PNG, decoded in full; CorruptEntryError unless of `shape`."""
    try:
        declared = png_shape(body)  # from the header alone: nothing decoded yet
    except ValueError as error:
        raise CorruptEntryError(f"entry picture: {error}") from error
    if not body.endswith(PNG_END):
        raise CorruptEntryError("entry picture is cut short (no IEND chunk)")
    if shape is not None and declared != shape:
        raise CorruptEntryError(f"entry picture is {declared}, not {shape}")
    if shape is None and declared[0] * declared[1] > MAX_PICTURE_PIXELS:
        raise CorruptEntryError(f"entry picture of {declared[0]}x{declared[1]} px is too large")
    try:
        pixels = png_pixels(body)
    except ValueError as error:
        raise CorruptEntryError(f"entry picture: {error}") from error
    if pixels.shape != declared:
        raise CorruptEntryError(f"entry picture decodes to {pixels.shape}, not {declared}")
    return pixels

"""Dataset indexes beside the pictures: stored authenticated, trusted only once checked in full.

    b"FCX1" | tag (32 bytes) | header length (u32 LE) | JSON header | arrays

The arrays are the index's values (float32), image numbers (int32) and
positions (int32), each (channels, depth), little-endian. The tag is an
HMAC-SHA256 under the cache's secret of the key and every byte after it, in
a domain of its own (an index can never pass for a picture, nor a picture
for an index). A stored index is used only when its tag verifies and every
field is what the request expects: the layer's channel count, the depth,
the content hash its key was made from, image numbers that name its images,
positions inside its map, finite values where an image is named. Anything
else is a counted, logged miss, and the index is built again.
"""

import hashlib
import hmac
import json
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from filtercast_server.cache.backends import Backend
from filtercast_server.cache.entry import MAX_ENTRY_BYTES, TAG_BYTES, CorruptEntryError
from filtercast_server.datasets import DatasetImage
from filtercast_server.examples import ExampleIndex, ReceptiveField
from filtercast_server.observability.logs import ThrottledLog

log = logging.getLogger(__name__)

MAGIC = b"FCX1"
DOMAIN = b"filtercast.examples.v1\0"
_LENGTH = struct.Struct("<I")
FIELDS = frozenset(
    (
        "content_sha256",
        "channels",
        "depth",
        "map_shape",
        "size",
        "field",
        "indexed",
        "skipped",
        "seconds",
        "images",
    )
)
MAX_SIDE = 1 << 16


@dataclass(frozen=True)
class IndexExpectation:
    """What the request knows its index must be."""

    content_sha256: str
    channels: int
    depth: int
    size: int


class IndexCodec:
    """Packs and checks stored indexes under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a cache secret needs at least 16 bytes")
        self._secret = secret

    def _tag(self, key: str, signed: bytes) -> bytes:
        return hmac.new(self._secret, DOMAIN + key.encode() + signed, hashlib.sha256).digest()

    def pack(self, key: str, index: ExampleIndex) -> bytes:
        """`index` as the stored bytes for `key`."""
        header = {
            "content_sha256": index.content_sha256,
            "channels": int(index.values.shape[0]),
            "depth": int(index.values.shape[1]),
            "map_shape": list(index.map_shape),
            "size": index.size,
            "field": [index.field.size, index.field.stride, index.field.offset],
            "indexed": index.indexed,
            "skipped": dict(index.skipped),
            "seconds": index.seconds,
            "images": [[image.name, image.sha256] for image in index.images],
        }
        text = json.dumps(header).encode()
        arrays = b"".join(
            np.ascontiguousarray(a, dtype=dtype).tobytes()
            for a, dtype in (
                (index.values, "<f4"),
                (index.image_ids, "<i4"),
                (index.positions, "<i4"),
            )
        )
        signed = _LENGTH.pack(len(text)) + text + arrays
        return MAGIC + self._tag(key, signed) + signed

    def unpack(self, key: str, blob: bytes, expect: IndexExpectation) -> ExampleIndex:
        """The verified index stored under `key` (CorruptEntryError for anything else)."""
        if len(blob) > MAX_ENTRY_BYTES or not blob.startswith(MAGIC):
            raise CorruptEntryError("not a stored index of this layout")
        tag, signed = blob[len(MAGIC) : len(MAGIC) + TAG_BYTES], blob[len(MAGIC) + TAG_BYTES :]
        if len(tag) != TAG_BYTES or not hmac.compare_digest(tag, self._tag(key, signed)):
            raise CorruptEntryError("index tag does not verify under this cache's secret")
        (length,) = _LENGTH.unpack_from(signed)
        try:
            header = json.loads(signed[_LENGTH.size : _LENGTH.size + length])
            return _index(header, signed[_LENGTH.size + length :], expect)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as error:
            raise CorruptEntryError(f"stored index: {type(error).__name__}: {error}") from error


def _index(header: dict, body: bytes, expect: IndexExpectation) -> ExampleIndex:
    """The index a verified header and body hold, checked against `expect` (ValueError)."""
    if not isinstance(header, dict) or set(header) != FIELDS:
        raise ValueError(f"header fields {sorted(header)[:12]}, not {sorted(FIELDS)}")
    wanted = (expect.content_sha256, expect.channels, expect.depth, expect.size)
    found = (header["content_sha256"], header["channels"], header["depth"], header["size"])
    if found != wanted:
        raise ValueError(f"index of {found}, not {wanted}")
    channels, depth = expect.channels, expect.depth
    height, width = (int(v) for v in header["map_shape"])
    size, stride, offset = (int(v) for v in header["field"])
    if not (0 < height < MAX_SIDE and 0 < width < MAX_SIDE and size > 0 and stride > 0):
        raise ValueError(f"map {height}x{width}, field {size}/{stride}")
    images = tuple(DatasetImage(str(name), str(digest)) for name, digest in header["images"])
    cells = channels * depth
    if len(body) != cells * 12:
        raise ValueError(f"arrays of {len(body)} bytes, not {cells * 12}")
    values = np.frombuffer(body, "<f4", cells).reshape(channels, depth)
    ids = np.frombuffer(body, "<i4", cells, cells * 4).reshape(channels, depth)
    positions = np.frombuffer(body, "<i4", cells, cells * 8).reshape(channels, depth)
    named = ids >= 0
    if ids.min(initial=0) < -1 or ids.max(initial=-1) >= len(images):
        raise ValueError("an image number names no image of the index")
    if not np.isfinite(values[named]).all() or positions.min(initial=0) < 0:
        raise ValueError("a value is not finite or a position negative")
    if positions.max(initial=0) >= height * width:
        raise ValueError("a position is outside the map")
    indexed, seconds = header["indexed"], header["seconds"]
    skipped = header["skipped"]
    if type(indexed) is not int or indexed < 0 or not math.isfinite(seconds) or seconds < 0:
        raise ValueError("indexed or seconds out of range")
    if not isinstance(skipped, dict) or not all(type(v) is int for v in skipped.values()):
        raise ValueError("skipped is not counts by reason")
    return ExampleIndex(
        images,
        values.astype(np.float32),
        ids.astype(np.int32),
        positions.astype(np.int32),
        (height, width),
        expect.size,
        ReceptiveField(size, stride, offset),
        indexed,
        {str(k): v for k, v in skipped.items()},
        expect.content_sha256,
        float(seconds),
    )


class IndexStore:
    """Indexes on the result cache's backend: a fault or a bad entry is a logged miss."""

    def __init__(self, backend: Backend, secret: bytes, on_fault: Callable[[str], None]) -> None:
        self.backend = backend
        self.codec = IndexCodec(secret)
        self.on_fault = on_fault
        self._warn = ThrottledLog(log)

    def load(self, key: str, expect: IndexExpectation) -> ExampleIndex | None:
        """The stored index under `key`, or None (absent, unreadable, forged or corrupt)."""
        try:
            blob = self.backend.get_many([key]).get(key)
        except Exception as error:
            self._fault("index_lookup", error)
            return None
        if blob is None:
            return None
        try:
            return self.codec.unpack(key, blob, expect)
        except CorruptEntryError as error:
            self._fault("index_corrupt", error)
            return None

    def save(self, key: str, index: ExampleIndex) -> None:
        """Keep `index` under `key`; a fault is counted, never raised."""
        try:
            blob = self.codec.pack(key, index)
            if len(blob) > MAX_ENTRY_BYTES:
                raise ValueError(f"{len(blob)} bytes, over the entry bound {MAX_ENTRY_BYTES}")
            self.backend.put(key, blob)
        except Exception as error:
            self._fault("index_store", error)

    def _fault(self, operation: str, error: BaseException) -> None:
        self.on_fault(operation)
        self._warn.warning((operation,), "dataset index %s failed: %s", operation, error)

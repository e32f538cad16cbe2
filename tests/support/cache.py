"""Cache entries for tests: outcomes, authentic and forged entries, a backend that fails."""

import json
import zlib

import numpy as np

from filtercast_server.cache.entry import MAGIC, EntryCodec, Expectation
from filtercast_server.jobs import FilterOutcome
from filtercast_server.observability.metrics import Metrics
from tests.support.standin import SECRET

KEY = "0123456789abcdef0123456789abcdef"
CODEC = EntryCodec(SECRET)
EXPECT = Expectation(index=3, shape=(8, 8, 3), max_steps=20, max_restarts=1)


def outcome(index: int = 3, side: int = 8, dead: bool = False, value: int = 0) -> FilterOutcome:
    rng = np.random.default_rng(index + value)
    image = None if dead else rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    return FilterOutcome(index, 1.5 * index, dead, image, 20, 0.25, revived=1)


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def signed(header: dict, body: bytes, key: str = KEY, codec: EntryCodec = CODEC) -> bytes:
    """An entry with a valid tag around any header and body: what only a holder of
    the secret could write (a bug of ours, or a leaked secret), checked all the same."""
    text = json.dumps(header).encode().replace(b"Infinity", b"1e400")
    payload = len(text).to_bytes(4, "little") + text + body
    return MAGIC + codec.tag(key, payload) + payload


def fields_of(blob: bytes) -> tuple[dict, bytes]:
    length = int.from_bytes(blob[36:40], "little")
    return json.loads(blob[40 : 40 + length]), blob[40 + length :]


OUTSIDER = EntryCodec(b"a secret no replica of ours holds")


def old_layout(body: bytes, index: int) -> bytes:
    """The entry the outside probe forged: the previous layout, a CRC-32 and nothing more."""
    header = {"index": index, "loss": 99.0, "dead": False, "steps": 2, "seconds": 0.1}
    text = json.dumps({**header, "revived": 0, "crc32": zlib.crc32(body), "length": len(body)})
    return b"FCR1" + len(text).to_bytes(4, "little") + text.encode() + body


FLAT = np.full((32, 32, 3), 200, np.uint8)  # what a forger would like clients to see


class BrokenBackend:
    """Every call fails, as a Redis that is down or a full disk would."""

    description = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, *args: object) -> None:
        self.calls += 1
        raise ConnectionError("connection refused")

    contains_many = get_many = put = delete = clear = volume = _fail
    ttl = None

    def close(self) -> None:
        pass

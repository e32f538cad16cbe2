"""The result cache on its own: entries, the directory and Redis backends, and faults.

Redis tests start a real Debian redis-server on a free port (skipped, saying
why, where it is not installed; .ci/run installs it).
"""

import io
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from filtercast_server.cache.backends import DiskBackend
from filtercast_server.cache.entry import (
    MAGIC,
    CorruptEntryError,
    EntryCodec,
    Expectation,
    ForeignEntryError,
    ForgedEntryError,
)
from filtercast_server.cache.results import ResultCache
from filtercast_server.jobs import FilterOutcome
from filtercast_server.observability.metrics import Metrics
from filtercast_server.png import png_bytes, png_pixels
from tests.support.cache import (
    CODEC,
    EXPECT,
    KEY,
    BrokenBackend,
    counter,
    fields_of,
    outcome,
    signed,
)
from tests.support.standin import SECRET

# --- entries ------------------------------------------------------------------------------


@given(
    image=st.one_of(
        st.none(),
        arrays(
            np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3]))
        ),
    ),
    index=st.integers(0, 2**31 - 1),
    loss=st.floats(allow_nan=False, allow_infinity=False, width=32),
    revived=st.integers(0, 8),
    expires=st.integers(0, 2**40),
)
def test_an_entry_gives_back_the_outcome_and_its_exact_pixels(
    image, index, loss, revived, expires
) -> None:
    original = FilterOutcome(index, loss, image is None, image, 7, 0.5, revived)
    shape = image.shape if image is not None else None
    stored = CODEC.unpack(KEY, CODEC.pack(KEY, original, expires), Expectation(index, shape))
    back = stored.outcome
    assert (back.index, back.loss, back.dead, back.steps, back.seconds, back.revived) == (
        index,
        loss,
        image is None,
        7,
        0.5,
        revived,
    )
    assert back.cached and stored.expires == expires
    if image is None:
        assert back.png is None and back.image is None
    else:
        np.testing.assert_array_equal(back.image, image)  # decoded (and so checked) already
        np.testing.assert_array_equal(png_pixels(back.png), image)


@given(data=st.data())
def test_any_damage_to_an_entry_is_refused_never_served(data) -> None:
    blob = CODEC.pack(KEY, outcome(side=16))
    how = data.draw(st.sampled_from(["truncate", "flip", "append"]))
    if how == "truncate":
        damaged = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        at = data.draw(st.integers(len(MAGIC), len(blob) - 1))
        damaged = blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1 :]
    else:
        damaged = blob + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(CorruptEntryError):
        CODEC.unpack(KEY, damaged, Expectation(3, (16, 16, 3)))


def test_an_entry_under_another_secret_or_key_is_forged() -> None:
    blob = CODEC.pack(KEY, outcome())
    elsewhere = EntryCodec(b"another secret, held by no replica")
    with pytest.raises(ForgedEntryError, match="does not verify"):
        elsewhere.unpack(KEY, blob, EXPECT)
    with pytest.raises(ForgedEntryError):  # a genuine entry moved to another filter's key
        CODEC.unpack("f" * 32, blob, EXPECT)
    header, body = fields_of(blob)
    with pytest.raises(ForgedEntryError):  # what an attacker without the secret can write
        CODEC.unpack(KEY, blob[:4] + bytes(32) + blob[36:], EXPECT)
    assert CODEC.unpack(KEY, signed(header, body), EXPECT).outcome.index == 3  # the helper


def test_the_old_crc_layout_is_never_served() -> None:
    """Forged in the layout the probe used (CRC-32 and nothing else): another layout, a miss."""
    body = png_bytes(outcome().image)
    header = {"index": 3, "loss": 9.0, "dead": False, "steps": 20, "seconds": 0.1}
    text = json.dumps({**header, "revived": 0, "crc32": zlib.crc32(body), "length": len(body)})
    forged = b"FCR1" + len(text).to_bytes(4, "little") + text.encode() + body
    with pytest.raises(ForeignEntryError):
        CODEC.unpack(KEY, forged, EXPECT)


GOOD = {
    "index": 3,
    "loss": 4.5,
    "dead": False,
    "steps": 20,
    "seconds": 0.25,
    "revived": 1,
    "expires": 0,
}
PICTURE = png_bytes(outcome().image)


def rgba_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    return buffer.getvalue()


# Every shape of a forged entry that carries a valid tag: each refused as corrupt.
FORGED_SHAPES = {
    "steps 2**40": ({"steps": 2**40}, PICTURE, "steps"),
    "steps 0": ({"steps": 0}, PICTURE, "steps"),
    "more steps than the plan": ({"steps": 21}, PICTURE, "steps"),
    "steps as text": ({"steps": "20"}, PICTURE, "steps"),
    "steps as a bool": ({"steps": True}, PICTURE, "steps"),
    "another filter": ({"index": 4}, PICTURE, "holds filter 4"),
    "negative index": ({"index": -3}, PICTURE, "index"),
    "index 1e400": ({"index": float("inf")}, PICTURE, "index"),
    "loss NaN": ({"loss": float("nan")}, PICTURE, "loss"),
    "loss beyond float32": ({"loss": 1e39}, PICTURE, "loss"),
    "loss as a list": ({"loss": [1]}, PICTURE, "loss"),
    "negative seconds": ({"seconds": -1}, PICTURE, "seconds"),
    "seconds 1e400": ({"seconds": float("inf")}, PICTURE, "seconds"),
    "more restarts than the plan": ({"revived": 2}, PICTURE, "revived"),
    "dead as text": ({"dead": "false"}, PICTURE, "dead flag"),
    "dead with a picture": ({"dead": True}, PICTURE, "disagree"),
    "alive without a picture": ({}, b"", "disagree"),
    "length that lies": ({"length": 5}, PICTURE, "bytes, not 5"),
    "an extra field": ({"crc32": 1}, PICTURE, "fields"),
    "a missing field": ({"expires": None}, PICTURE, "expires"),
    "negative expiry": ({"expires": -1}, PICTURE, "expires"),
    "garbled PNG behind a good header": ({}, PICTURE[:40] + bytes(60) + PICTURE[100:], "picture"),
    "truncated PNG": ({}, PICTURE[: len(PICTURE) // 2], "picture"),
    "a picture of another size": ({}, png_bytes(outcome(side=16).image), r"\(16, 16, 3\)"),
    "an RGBA picture": ({}, rgba_png(), "colour type 6"),
    "a JPEG": ({}, jpeg(), "not a PNG"),
    "HTML as the picture": ({}, b"<html><script>alert(1)</script></html>", "not a PNG"),
}


@pytest.mark.parametrize("shape", FORGED_SHAPES, ids=list(FORGED_SHAPES))
def test_every_field_of_an_authentic_entry_is_checked(shape) -> None:
    changes, body, words = FORGED_SHAPES[shape]
    header = {**GOOD, "length": len(body), **changes}
    header = {k: v for k, v in header.items() if v is not None}
    with pytest.raises(CorruptEntryError, match=words) as refused:
        CODEC.unpack(KEY, signed(header, body), EXPECT)
    assert not isinstance(refused.value, ForgedEntryError)


@pytest.mark.parametrize(
    "header",
    [b"[" * 4000, b"[1, 2]", b'"text"', b"{not json", b"x" * 5000],
    ids=["nested", "a list", "a string", "not JSON", "oversized"],
)
def test_a_header_that_is_not_our_object_is_refused(header) -> None:
    payload = len(header).to_bytes(4, "little") + header
    with pytest.raises(CorruptEntryError):
        CODEC.unpack(KEY, MAGIC + CODEC.tag(KEY, payload) + payload, EXPECT)


def test_an_outcome_no_reader_would_accept_is_never_stored() -> None:
    broken = FilterOutcome(3, float("nan"), False, outcome().image, 20, 0.25)
    with pytest.raises(CorruptEntryError, match="loss"):
        CODEC.pack(KEY, broken)


def test_another_layout_is_foreign_not_corrupt() -> None:
    with pytest.raises(ForeignEntryError):
        CODEC.unpack(KEY, b"FCR9" + CODEC.pack(KEY, outcome())[4:], EXPECT)


# --- ResultCache: stores, lookups, faults ------------------------------------------------------


def test_a_stored_filter_is_found_before_and_after_its_write(tmp_path: Path) -> None:
    metrics = Metrics()
    cache = ResultCache(DiskBackend(tmp_path, 10 * 1024**2, 3600), SECRET, metrics)
    original = outcome(index=5)
    expect = Expectation(shape=(8, 8, 3), max_steps=20, max_restarts=1)
    cache.store(KEY, original)
    assert cache.present({5: KEY}) == {5}  # from memory or from disk, whichever is first
    assert cache.fetch({5: KEY}, expect)[5].cached
    assert cache.flush()
    assert cache.present({5: KEY, 6: "f" * 32}) == {5}
    late = cache.fetch({5: KEY, 6: "f" * 32}, expect)
    assert list(late) == [5]
    np.testing.assert_array_equal(late[5].image, original.image)
    assert counter(metrics, "filtercast_cache_hits_total") == 2
    assert counter(metrics, "filtercast_cache_misses_total") == 2  # 6, twice
    assert counter(metrics, "filtercast_cache_bytes") > 0
    picture, expires = cache.picture(KEY)
    assert picture == late[5].png
    assert 3500 < expires - time.time() <= 3601, "the entry's expiry travels with it"
    cache.close()


def test_forged_and_corrupt_entries_are_counted_dropped_and_computed_again(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    backend = DiskBackend(tmp_path, 10 * 1024**2, None)
    keys = [f"{i:032x}" for i in range(4)]
    genuine = CODEC.pack(keys[0], outcome(index=0))
    backend.put(keys[0], genuine[:-10])  # a torn write
    backend.put(keys[1], genuine)  # filter 0's entry moved under filter 1's key
    header, body = fields_of(genuine)
    backend.put(keys[2], signed({**header, "index": 2, "steps": 2**40}, body, keys[2]))
    backend.put(keys[3], EntryCodec(b"the attacker's own secret!!!").pack(keys[3], outcome(3)))
    cache = ResultCache(backend, SECRET, metrics)
    wanted = dict(enumerate(keys))
    assert cache.fetch(wanted, Expectation(shape=(8, 8, 3), max_steps=20, max_restarts=1)) == {}
    assert counter(metrics, "filtercast_cache_errors_total", operation="corrupt") == 2
    assert counter(metrics, "filtercast_cache_errors_total", operation="forged") == 2
    assert backend.get_many(keys) == {}, "refused entries were left to fail again"
    assert cache.picture(keys[1]) is None
    cache.close()


def test_a_failing_backend_is_a_counted_miss_and_rests_between_tries() -> None:
    metrics = Metrics()
    backend = BrokenBackend()
    cache = ResultCache(backend, SECRET, metrics, retry_seconds=60)  # type: ignore[arg-type]
    assert cache.present({1: KEY}) == set()
    assert cache.present({1: KEY}) == set()  # resting: the backend is not asked again
    assert cache.fetch({1: KEY}, EXPECT) == {}
    assert backend.calls == 1 and not cache.available()
    assert counter(metrics, "filtercast_cache_errors_total", operation="lookup") == 1
    assert counter(metrics, "filtercast_cache_misses_total") == 3
    assert cache.picture(KEY) is None
    cache.close()


def test_a_failing_store_is_counted_and_never_raises() -> None:
    metrics = Metrics()
    cache = ResultCache(BrokenBackend(), SECRET, metrics, retry_seconds=0)  # type: ignore[arg-type]
    cache.store(KEY, outcome())
    assert cache.flush()
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") == 1
    cache.close()


def test_stores_beyond_the_write_queue_are_dropped_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()

    class SlowBackend(DiskBackend):
        def put(self, key: str, blob: bytes) -> int:
            time.sleep(0.2)
            return super().put(key, blob)

    cache = ResultCache(SlowBackend(tmp_path, 10 * 1024**2, None), SECRET, metrics, write_queue=2)
    for i in range(10):
        cache.store(f"{i:032x}", outcome(index=i))
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") >= 6
    assert cache.flush()
    cache.close()

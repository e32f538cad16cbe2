"""The result cache on its own: entries, the directory and Redis backends, and faults.

Redis tests start a real Debian redis-server on a free port (skipped, saying
why, where it is not installed; .ci/run installs it).
"""

import json
import multiprocessing
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from filtercast_client.local_server import free_port
from filtercast_server.cache.backends import DiskBackend, RedisBackend, open_backend
from filtercast_server.cache.entry import CorruptEntryError, ForeignEntryError, pack, unpack
from filtercast_server.cache.results import ResultCache
from filtercast_server.metrics import Metrics
from filtercast_server.png import png_pixels
from filtercast_server.work import FilterOutcome
from tests.serving import wait_until

KEY = "0123456789abcdef0123456789abcdef"


def outcome(index: int = 3, side: int = 8, dead: bool = False, value: int = 0) -> FilterOutcome:
    rng = np.random.default_rng(index + value)
    image = None if dead else rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    return FilterOutcome(index, 1.5 * index, dead, image, 20, 0.25, revived=1)


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


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
)
def test_an_entry_gives_back_the_outcome_and_its_exact_pixels(image, index, loss, revived) -> None:
    original = FilterOutcome(index, loss, image is None, image, 7, 0.5, revived)
    shape = image.shape if image is not None else None
    back = unpack(pack(original), index, shape)
    assert (back.index, back.loss, back.dead, back.steps, back.seconds, back.revived) == (
        index,
        loss,
        image is None,
        7,
        0.5,
        revived,
    )
    assert back.cached and back.image is None
    if image is None:
        assert back.png is None
    else:
        assert back.png is not None
        np.testing.assert_array_equal(png_pixels(back.png), image)


@given(data=st.data())
def test_a_damaged_entry_is_refused_never_served(data) -> None:
    blob = pack(outcome(side=16))
    how = data.draw(st.sampled_from(["truncate", "flip", "magic", "header"]))
    if how == "truncate":
        damaged = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        at = data.draw(st.integers(0, len(blob) - 1))
        damaged = blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1 :]
    elif how == "magic":
        damaged = b"XXXX" + blob[4:]
    else:
        damaged = blob[:8] + b"{not json" + blob[17:]
    try:
        back = unpack(damaged, 3, (16, 16, 3))
    except (CorruptEntryError, ForeignEntryError):  # a damaged magic reads as another layout
        return
    # A flip inside the JSON can leave it valid (a digit of the loss): then the
    # picture itself is still intact, which the CRC guarantees.
    assert back.png is not None
    np.testing.assert_array_equal(png_pixels(back.png), outcome(side=16).image)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ({"index": 1e400}, "unreadable"),  # json gives inf; int(inf) overflows
        ({"index": 4}, "holds filter 4"),
        ({"dead": True}, "dead flag disagree"),
        ({"loss": [1]}, "unreadable"),
        ({"crc32": "x"}, "unreadable"),
    ],
)
def test_a_forged_header_is_refused(header, words) -> None:
    good = pack(outcome(index=3))
    length = int.from_bytes(good[4:8], "little")
    fields = {**json.loads(good[8 : 8 + length]), **header}
    text = json.dumps(fields).encode().replace(b"Infinity", b"1e400")
    forged = good[:4] + len(text).to_bytes(4, "little") + text + good[8 + length :]
    with pytest.raises(CorruptEntryError, match=words):
        unpack(forged, 3, (8, 8, 3))


def test_a_deeply_nested_header_and_a_wrong_picture_size_are_refused() -> None:
    nested = b"[" * 4000
    blob = b"FCR1" + len(nested).to_bytes(4, "little") + nested
    with pytest.raises(CorruptEntryError):
        unpack(blob, 3, None)
    with pytest.raises(CorruptEntryError, match=r"is \(8, 8, 3\), not \(16, 16, 3\)"):
        unpack(pack(outcome(index=3)), 3, (16, 16, 3))


def test_another_layout_is_foreign_not_corrupt() -> None:
    with pytest.raises(ForeignEntryError):
        unpack(b"FCR9" + pack(outcome())[4:], 3, None)


# --- the directory backend --------------------------------------------------------------------


def test_a_directory_cache_survives_closing_and_reopening(tmp_path: Path) -> None:
    first = DiskBackend(tmp_path, 10 * 1024**2, None)
    first.put(KEY, b"picture")
    first.close()
    again = DiskBackend(tmp_path, 10 * 1024**2, None)
    assert again.contains_many([KEY, "f" * 32]) == {KEY}
    assert again.get_many([KEY, "f" * 32]) == {KEY: b"picture"}
    assert again.clear() == 1 and again.get_many([KEY]) == {}


def test_a_directory_cache_evicts_the_least_recently_used_beyond_its_size(tmp_path: Path) -> None:
    backend = DiskBackend(tmp_path, 1024**2, None)  # 1 MiB
    blob = bytes(100 * 1024)
    keys = [f"{i:032x}" for i in range(30)]  # 3 MB in all
    backend.put(keys[0], blob)
    for key in keys[1:]:
        backend.get_many([keys[0]])  # keep the first one in use
        backend.put(key, blob)
    held = backend.get_many(keys)
    assert backend.volume() <= 1.3 * 1024**2
    assert keys[0] in held, "the entry read all along was evicted"
    assert keys[1] not in held, "the oldest unread entry was kept"
    assert keys[-1] in held


def _write_entries(directory: str, start: int) -> None:
    backend = DiskBackend(Path(directory), 10 * 1024**2, None)
    for i in range(start, start + 50):
        backend.put(f"{i:032x}", i.to_bytes(4, "little") * 100)
    backend.close()


def test_several_processes_share_one_directory(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_entries, args=(str(tmp_path), s)) for s in (0, 50)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    backend = DiskBackend(tmp_path, 10 * 1024**2, None)
    found = backend.get_many(f"{i:032x}" for i in range(100))
    assert len(found) == 100
    assert all(found[f"{i:032x}"] == i.to_bytes(4, "little") * 100 for i in range(100))


def test_a_pickled_value_in_the_directory_is_never_loaded(tmp_path: Path) -> None:
    import diskcache

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    with diskcache.Cache(str(tmp_path)) as foreign:  # someone else's write, pickled
        foreign.set(KEY, Boom())
        assert pickle.dumps(Boom())  # it would run on load
    backend = DiskBackend(tmp_path, 10 * 1024**2, None)
    assert backend.get_many([KEY]) == {}
    assert backend.contains_many([KEY]) == set(), "the refused value was left behind"


def test_an_explicit_unusable_directory_is_an_error_and_off_is_none(tmp_path: Path) -> None:
    assert open_backend("off", 1024**2, None) is None
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        open_backend(str(blocker / "cache"), 1024**2, None)


# --- ResultCache: stores, lookups, faults ------------------------------------------------------


def test_a_stored_filter_is_found_before_and_after_its_write(tmp_path: Path) -> None:
    metrics = Metrics()
    cache = ResultCache(DiskBackend(tmp_path, 10 * 1024**2, None), metrics)
    original = outcome(index=5)
    cache.store(KEY, original)
    assert cache.present({5: KEY}) == {5}  # from memory or from disk, whichever is first
    assert cache.fetch({5: KEY}, (8, 8, 3))[5].cached
    assert cache.flush()
    assert cache.present({5: KEY, 6: "f" * 32}) == {5}
    late = cache.fetch({5: KEY, 6: "f" * 32}, (8, 8, 3))
    assert list(late) == [5]
    np.testing.assert_array_equal(png_pixels(late[5].png), original.image)
    assert counter(metrics, "filtercast_cache_hits_total") == 2
    assert counter(metrics, "filtercast_cache_misses_total") == 2  # 6, twice
    assert counter(metrics, "filtercast_cache_bytes") > 0
    assert cache.png(KEY) == late[5].png
    cache.close()


def test_a_corrupt_entry_is_counted_dropped_and_computed_again(tmp_path: Path) -> None:
    metrics = Metrics()
    backend = DiskBackend(tmp_path, 10 * 1024**2, None)
    blob = pack(outcome(index=2))
    backend.put(KEY, blob[:-10])  # a torn write
    backend.put("1" * 32, pack(outcome(index=9)))  # an entry of another filter under this key
    cache = ResultCache(backend, metrics)
    assert cache.fetch({2: KEY, 3: "1" * 32}, (8, 8, 3)) == {}
    assert counter(metrics, "filtercast_cache_errors_total", operation="corrupt") == 2
    assert backend.get_many([KEY, "1" * 32]) == {}, "corrupt entries were left to fail again"
    cache.close()


class BrokenBackend:
    """Every call fails, as a Redis that is down or a full disk would."""

    description = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, *args: object) -> None:
        self.calls += 1
        raise ConnectionError("connection refused")

    contains_many = get_many = put = delete = clear = volume = _fail

    def close(self) -> None:
        pass


def test_a_failing_backend_is_a_counted_miss_and_rests_between_tries() -> None:
    metrics = Metrics()
    backend = BrokenBackend()
    cache = ResultCache(backend, metrics, retry_seconds=60)  # type: ignore[arg-type]
    assert cache.present({1: KEY}) == set()
    assert cache.present({1: KEY}) == set()  # resting: the backend is not asked again
    assert cache.fetch({1: KEY}, None) == {}
    assert backend.calls == 1 and not cache.available()
    assert counter(metrics, "filtercast_cache_errors_total", operation="lookup") == 1
    assert counter(metrics, "filtercast_cache_misses_total") == 3
    assert cache.png(KEY) is None
    cache.close()


def test_a_failing_store_is_counted_and_never_raises() -> None:
    metrics = Metrics()
    cache = ResultCache(BrokenBackend(), metrics, retry_seconds=0)  # type: ignore[arg-type]
    cache.store(KEY, outcome())
    assert cache.flush()
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") == 1
    cache.close()


def test_stores_beyond_the_write_queue_are_dropped_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()

    class SlowBackend(DiskBackend):
        def put(self, key: str, blob: bytes) -> None:
            time.sleep(0.2)
            super().put(key, blob)

    cache = ResultCache(SlowBackend(tmp_path, 10 * 1024**2, None), metrics, write_queue=2)
    for i in range(10):
        cache.store(f"{i:032x}", outcome(index=i))
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") >= 6
    assert cache.flush()
    cache.close()


# --- Redis -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(up, "redis-server answers", timeout=30)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


def test_redis_keeps_entries_with_a_ttl_and_clears_only_its_own(redis_url: str) -> None:
    import redis

    backend = RedisBackend(redis_url, ttl=3600)
    other = redis.Redis.from_url(redis_url)
    other.set("someone-else", b"x")
    backend.put(KEY, b"picture")
    assert backend.get_many([KEY, "f" * 32]) == {KEY: b"picture"}
    assert 3500 < other.ttl("filtercast:result:" + KEY) <= 3600
    assert backend.volume() > 0
    assert backend.clear() == 1
    assert backend.get_many([KEY]) == {}
    assert other.get("someone-else") == b"x"
    backend.close()


def test_a_result_cache_on_redis_round_trips_a_filter(redis_url: str) -> None:
    cache = ResultCache(open_backend(redis_url, 0, 60), Metrics())  # type: ignore[arg-type]
    original = outcome(index=4)
    cache.store(KEY, original)
    assert cache.flush()
    with ResultCache(RedisBackend(redis_url, 60)) as elsewhere:  # another replica
        assert elsewhere.present({4: KEY, 5: "f" * 32}) == {4}
        found = elsewhere.fetch({4: KEY}, (8, 8, 3))
    np.testing.assert_array_equal(png_pixels(found[4].png), original.image)
    cache.backend.clear()
    cache.close()


def test_redis_down_costs_a_counted_miss_not_a_failure() -> None:
    metrics = Metrics()
    cache = ResultCache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0", 60), metrics)
    assert cache.present({1: KEY}) == set()
    cache.store(KEY, outcome())
    assert cache.flush()
    assert counter(metrics, "filtercast_cache_errors_total", operation="lookup") == 1
    cache.close()

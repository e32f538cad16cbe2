"""The directory backend on a full disk: a real small tmpfs, mounted by the test
(skipped, saying why, where it cannot mount), and `filtercast clear-cache` on it."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from filtercast_server.cache.backends import DiskBackend
from filtercast_server.cache.entry import Expectation
from filtercast_server.cache.results import ResultCache
from filtercast_server.observability.metrics import Metrics
from tests.support.cache import KEY, counter, outcome
from tests.support.standin import SECRET

CLI = (sys.executable, "-c", "from filtercast_client.cli import main; main()")
MiB = 1024**2


def keys(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (needs root, as on CI and the dev machines)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.strip() or 'not root'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int = 0) -> None:
    """Take the bytes left on the filesystem but `leave`, as another program would."""
    with open(mount / "ballast", "ab", buffering=0) as ballast:
        try:
            while shutil.disk_usage(mount).free > leave:
                ballast.write(bytes(4096))
        except OSError:
            pass
    assert shutil.disk_usage(mount).free <= leave + 4096


def test_a_full_disk_still_serves_what_it_holds(small_disk: Path) -> None:
    backend = DiskBackend(small_disk / "cache", 100 * MiB, None)
    cache = ResultCache(backend, SECRET, metrics := Metrics())
    names = keys(4)
    for index, key in enumerate(names):
        cache.store(key, outcome(index=index))
    assert cache.flush()
    fill(small_disk)
    assert backend.contains_many(names) == set(names)
    assert len(backend.get_many(names)) == 4, "a lookup on a full disk failed"
    for index, key in enumerate(names):
        expect = Expectation(index=index, shape=(8, 8, 3), max_steps=20, max_restarts=1)
        assert cache.fetch({index: key}, expect).keys() == {index}
    assert counter(metrics, "filtercast_cache_errors_total", operation="lookup") == 0
    cache.close()


def test_a_filling_disk_evicts_the_oldest_to_keep_room_and_counts_it(small_disk: Path) -> None:
    backend = DiskBackend(small_disk / "cache", 100 * MiB, None)
    cache = ResultCache(backend, SECRET, metrics := Metrics())
    names = keys(12)
    for key in names[:6]:
        backend.put(key, os.urandom(100 * 1024))
    fill(small_disk, leave=100 * 1024)  # under the reserve (1/20 of 4 MiB) another program left
    for index, key in enumerate(names[6:], 6):
        cache.store(key, outcome(index=index, side=180))  # ~100 KB of noise each
        assert cache.flush()
    held = backend.get_many(names)
    assert names[-1] in held, "the newest store failed instead of making room"
    assert names[0] not in held, "the oldest entry was kept while newer ones needed room"
    assert counter(metrics, "filtercast_cache_evictions_total", reason="free_space") >= 1
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") == 0
    assert cache.picture(names[-1]) is not None
    cache.close()


def test_with_nothing_left_to_evict_stores_rest_and_reads_go_on(small_disk: Path) -> None:
    backend = DiskBackend(small_disk / "cache", 100 * MiB, None)
    cache = ResultCache(backend, SECRET, metrics := Metrics(), retry_seconds=60)
    cache.store(KEY, outcome())
    assert cache.flush()
    fill(small_disk)
    huge = outcome(index=5, side=1100)  # 3.6 MB of noise: more than the whole disk
    cache.store("f" * 32, huge)
    assert cache.flush()
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") == 1
    assert cache.available(), "a failed write stopped the reads"
    expect = Expectation(index=3, shape=(8, 8, 3), max_steps=20, max_restarts=1)
    assert cache.fetch({3: KEY}, expect).keys() == {3}
    cache.close()


def test_clear_cache_empties_a_cache_on_a_full_disk(small_disk: Path) -> None:
    directory = small_disk / "cache"
    backend = DiskBackend(directory, 100 * MiB, None)
    for key in keys(20):
        backend.put(key, os.urandom(100 * 1024))
    backend.close()
    fill(small_disk)
    done = subprocess.run(
        [*CLI, "clear-cache", "--cache", str(directory)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    again = DiskBackend(directory, 100 * MiB, None)
    assert again.get_many(keys(20)) == {}
    again.put(KEY, b"room again")
    assert again.get_many([KEY]) == {KEY: b"room again"}

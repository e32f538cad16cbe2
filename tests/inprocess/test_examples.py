"""DatasetExamples through the real servicer, scheduler, store and gateway, on the stand-in layer.

The stand-in layer's channel c is (c + 1) x the 16 px-pooled brightness of
the seen image, so the ranking of a folder is known without TensorFlow:
the brightest 16 px cell wins every channel.
"""

import base64
import io
import json
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from filtercast_client import Client, InvalidRequest, NotFound, Overloaded
from filtercast_server.cache.backends import DiskBackend
from filtercast_server.images import square_view
from tests.support.standin import IndexMaps, StandIn, standin_maps

SIZE = 224  # the stand-in model takes any size: the index sees 224 px


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photos(folder: Path, count: int = 7, seed: int = 4) -> Path:
    """`count` images, each with one bright square somewhere, and three files that are not."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        pixels = rng.integers(0, 60, (240, 300, 3), dtype=np.uint8)
        y, x = rng.integers(0, 200, 2)
        pixels[y : y + 40, x : x + 40] = 100 + 20 * n
        (folder / f"{n:02d}.png").write_bytes(png(pixels))
    (folder / "truncated.png").write_bytes(png(pixels)[:200])
    (folder / "text.jpg").write_bytes(b"not a jpeg at all")
    (folder / "README.md").write_text("ignored: not an image")
    return folder


def brute_force(folder: Path, channel: int) -> list[tuple[str, float, int, int]]:
    """(image, maximum, y, x) of every decodable image for `channel`, best first."""
    found = []
    for path in sorted(folder.glob("*.png")):
        try:
            pixels = np.asarray(Image.open(path).convert("RGB"))
        except OSError:
            continue
        maps = standin_maps("vgg16", "block5_conv1", square_view(pixels, SIZE))[..., channel]
        y, x = np.unravel_index(int(maps.argmax()), maps.shape)
        found.append((path.name, float(maps.max()), int(y), int(x)))
    return sorted(found, key=lambda e: (-e[1], e[0]))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    return photos(tmp_path / "photos")


def test_the_examples_are_the_brute_force_ranking_with_their_crops(folder: Path) -> None:
    progress: list = []
    with StandIn(datasets={"photos": folder}) as server, Client(server.address) as client:
        found = client.examples("photos", filters="0:3,10", top_k=4, on_progress=progress.append)
        assert client.list_models()[0].datasets == ["photos"]
    assert [p.state for p in progress][-1] == "ready" and progress[0].state in (
        "queued",
        "building",
    )
    assert progress[-1].done == progress[-1].total == 9 and progress[-1].skipped == 2
    assert [c.channel for c in found.channels] == [0, 1, 2, 10]
    for channel in found.channels:
        expected = brute_force(folder, channel.channel)[:4]
        assert [(e.image, e.position) for e in channel.examples] == [
            (name, (y, x)) for name, _, y, x in expected
        ]
        np.testing.assert_allclose(
            [e.value for e in channel.examples], [v for _, v, *_ in expected]
        )
        for example in channel.examples:  # the crop is the seen image at the position's field
            seen = square_view(np.asarray(Image.open(folder / example.image).convert("RGB")), SIZE)
            y, x = example.position
            assert example.box == (16 * y, 16 * x, 16, 16)
            np.testing.assert_array_equal(
                example.crop, seen[16 * y : 16 * y + 16, 16 * x : 16 * x + 16]
            )
    summary = found.summary
    assert summary["images"] == 7 and summary["skipped"] == {"undecodable": 2}
    assert summary["receptiveField"] == 16 and summary["mapHeight"] == 14
    assert not summary.get("fromStore")


def test_requests_that_arrive_during_a_build_share_it(folder: Path) -> None:
    gate = threading.Event()
    maps = IndexMaps(gate=gate)
    with StandIn(datasets={"photos": folder}, index_maps=maps) as server:
        results: list = []

        def ask() -> None:
            with Client(server.address) as client:
                results.append(client.examples("photos", filters=[5], top_k=2))

        askers = [threading.Thread(target=ask) for _ in range(3)]
        for asker in askers:
            asker.start()
        admission = server.servicer.examples.admission
        deadline = time.monotonic() + 30
        while admission.open < 3 and time.monotonic() < deadline:  # all wait at the gate
            time.sleep(0.01)
        assert admission.open == 3 and maps.images == 0
        gate.set()
        for asker in askers:
            asker.join(30)
    assert len(results) == 3
    assert maps.images == 7, "one build read every image once"
    assert len({tuple(e.image for e in r.channels[0].examples) for r in results}) == 1


def test_the_index_survives_a_restart_and_is_built_again_when_a_file_changes(
    folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "cache"
    backend = DiskBackend(store, 1 << 30, None)
    with StandIn(datasets={"photos": folder}, cache_backend=backend) as s, Client(s.address) as c:
        first = c.examples("photos", filters="0:2")
    maps = IndexMaps()
    with (
        StandIn(
            datasets={"photos": folder},
            cache_backend=DiskBackend(store, 1 << 30, None),
            index_maps=maps,
        ) as server,
        Client(server.address) as client,
    ):
        again = client.examples("photos", filters="0:2")
        assert again.summary["fromStore"] and maps.images == 0, "read back, not built"
        assert [e.image for e in again.channels[0].examples] == [
            e.image for e in first.channels[0].examples
        ]
        brightest = np.full((240, 240, 3), 255, np.uint8)  # now wins every channel
        (folder / "03.png").write_bytes(png(brightest))
        changed = client.examples("photos", filters="0:2")
        assert not changed.summary.get("fromStore") and maps.images == 7
        assert changed.summary["contentSha256"] != first.summary["contentSha256"]
        assert changed.channels[0].examples[0].image == "03.png"


def test_a_forged_index_in_the_store_is_refused_counted_and_built_again(
    folder: Path, tmp_path: Path
) -> None:
    backend = DiskBackend(tmp_path / "cache", 1 << 30, None)
    with StandIn(datasets={"photos": folder}, cache_backend=backend) as s, Client(s.address) as c:
        honest = c.examples("photos", filters=[0])
    backend = DiskBackend(tmp_path / "cache", 1 << 30, None)
    (key,) = list(backend._cache.iterkeys())  # the one index stored
    forged = bytearray(backend.get_many([key])[key])
    forged[-1] ^= 0xFF  # another tenant's edit: the tag no longer verifies
    backend.put(key, bytes(forged))
    maps = IndexMaps()
    with StandIn(datasets={"photos": folder}, cache_backend=backend, index_maps=maps) as server:
        with Client(server.address) as client:
            rebuilt = client.examples("photos", filters=[0])
        corrupt = server.metrics.cache_errors.labels("index_corrupt")._value.get()
    assert corrupt == 1 and maps.images == 7 and not rebuilt.summary.get("fromStore")
    assert [e.image for e in rebuilt.channels[0].examples] == [
        e.image for e in honest.channels[0].examples
    ]


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        (
            {"dataset": "nope"},
            NotFound,
            "dataset 'nope' is not registered for vgg16; its datasets: photos",
        ),
        ({"dataset": "photos", "top_k": 17}, InvalidRequest, "top_k=17 is out of range: 1..16"),
        ({"dataset": "photos", "filters": "60:70"}, InvalidRequest, "filter 64 is out of range"),
        ({"dataset": "photos", "layer": "fc1"}, InvalidRequest, "layer 'fc1' not found"),
        ({"dataset": "photos", "model": "vgg99"}, NotFound, "model 'vgg99' is not served"),
    ],
)
def test_bad_requests_say_what_to_change(
    folder: Path, fields: dict, error: type, words: str
) -> None:
    with StandIn(datasets={"photos": folder}) as server, Client(server.address) as client:
        dataset = fields.pop("dataset")
        with pytest.raises(error, match=words):
            client.examples(dataset, **fields)


def test_a_server_without_datasets_says_so() -> None:
    with (
        StandIn() as server,
        Client(server.address) as client,
        pytest.raises(grpc.RpcError) as raised,
    ):
        client.examples("photos")
    assert "this server has no datasets" in str(raised.value)


def test_the_gateway_streams_examples_as_ndjson(folder: Path) -> None:
    with StandIn(datasets={"photos": folder}, gateway=True) as server:
        request = urllib.request.Request(
            f"{server.http_url}/v1/models/vgg16/datasets/photos:examples",
            data=json.dumps({"filters": {"list": {"indices": [7]}}, "topK": 1}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            lines = [json.loads(line)["result"] for line in response.read().splitlines()]
    assert "progress" in lines[0] and "summary" in lines[-1]
    (channel,) = [line["channel"] for line in lines if "channel" in line]
    assert channel["channel"] == 7
    assert channel["examples"][0]["image"] == brute_force(folder, 7)[0][0]
    crop = base64.b64decode(channel["examples"][0]["crop"]["data"])  # the proto's Image, PNG
    assert Image.open(io.BytesIO(crop)).size == (16, 16)


def test_a_folder_gone_from_the_server_is_a_failed_precondition(folder: Path) -> None:
    with StandIn(datasets={"photos": folder}) as server, Client(server.address) as client:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        with pytest.raises(grpc.RpcError) as raised:
            client.examples("photos")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "dataset photos: its folder is gone from the server" in str(raised.value)


def test_replicas_on_one_redis_share_an_index_and_refuse_a_tenants_forgery(
    folder: Path, redis_url: str
) -> None:
    import redis

    from filtercast_server.cache.backends import REDIS_PREFIX, RedisBackend

    first = StandIn(datasets={"photos": folder}, cache_backend=RedisBackend(redis_url, None))
    with first as a, Client(a.address) as client:
        built = client.examples("photos", filters=[3])
    maps = IndexMaps()
    other = StandIn(
        datasets={"photos": folder}, cache_backend=RedisBackend(redis_url, None), index_maps=maps
    )
    with other as b, Client(b.address) as client:
        shared = client.examples("photos", filters=[3])
    assert shared.summary["fromStore"] and maps.images == 0, "the second replica built nothing"
    assert [e.image for e in shared.channels[0].examples] == [
        e.image for e in built.channels[0].examples
    ]
    tenant = redis.Redis.from_url(redis_url)
    (key,) = tenant.keys(REDIS_PREFIX + "*")
    tenant.set(key, b"FCX1" + bytes(32) + b"{}")  # another tenant's index, without the secret
    maps = IndexMaps()
    third = StandIn(
        datasets={"photos": folder}, cache_backend=RedisBackend(redis_url, None), index_maps=maps
    )
    with third as c, Client(c.address) as client:
        rebuilt = client.examples("photos", filters=[3])
        assert c.metrics.cache_errors.labels("index_corrupt")._value.get() == 1
    assert not rebuilt.summary.get("fromStore") and maps.images == 7


def test_a_client_may_start_two_index_builds_at_once(tmp_path: Path) -> None:
    folders = {}
    for seed, name in enumerate("abc"):  # other contents: other indexes (equal ones share)
        (tmp_path / name).mkdir()
        folders[name] = photos(tmp_path / name, count=2, seed=seed)
    gate = threading.Event()
    with StandIn(datasets=folders, index_maps=IndexMaps(gate=gate)) as server:
        results: list = []

        def ask(name: str) -> None:
            with Client(server.address) as client:
                results.append(client.examples(name, filters=[0]))

        askers = [threading.Thread(target=ask, args=(name,)) for name in "ab"]
        for asker in askers:
            asker.start()
        examples = server.servicer.examples
        deadline = time.monotonic() + 30
        while len(examples._builds) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with Client(server.address) as client, pytest.raises(Overloaded, match="started 2"):
            client.examples("c", filters=[0])
        gate.set()
        for asker in askers:
            asker.join(30)
        assert len(results) == 2
        with Client(server.address) as client:  # the builds are done: room again
            assert client.examples("c", filters=[0]).channels

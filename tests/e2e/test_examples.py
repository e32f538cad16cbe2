"""DatasetExamples end to end: a real server process, the `filtercast examples` CLI, a restart."""

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.processes import ServerProcess

FILTERCAST = str(Path(sys.executable).parent / "filtercast")
LAYER = "block2_conv2"


def bomb_png() -> bytes:
    """A PNG whose header declares 60000 x 60000 pixels: refused before it is decoded."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00" * 64


def photos(folder: Path) -> Path:
    rng = np.random.default_rng(8)
    for n in range(5):
        pixels = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
        pixels[:, :: n + 2] = (40 * n, 255 - 40 * n, 128)
        Image.fromarray(pixels).save(folder / f"{n}.jpg", quality=90)
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "cut.jpg").write_bytes((folder / "0.jpg").read_bytes()[:900])
    return folder


def examples(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    command = [FILTERCAST, "examples", "--server", server.address, "--dataset", "photos"]
    return subprocess.run(
        [*command, "--layer", LAYER, *args], capture_output=True, text=True, timeout=600
    )


def brute_force(folder: Path, channels: list[int]) -> dict[int, list[str]]:
    """Each channel's images, best first, from the same seeded random VGG16 in this process."""
    from filtercast_server.engine.analysis import LayerMaps
    from filtercast_server.engine.models import LoadedModel
    from filtercast_server.images import ImageError, decode_image, square_view
    from tests.support.engine import CPU

    maps = LayerMaps({"vgg16": LoadedModel("vgg16", "random", CPU, seed=0)})
    maxima = {}
    for path in sorted(folder.iterdir()):
        try:
            pixels = square_view(decode_image(path.read_bytes(), shrink_to=224).pixels, 224)
        except ImageError:
            continue
        maxima[path.name] = maps("vgg16", LAYER, pixels).max(axis=(0, 1))
    return {c: sorted(maxima, key=lambda n: (-maxima[n][c], n)) for c in channels}


def test_examples_are_built_served_and_read_back_after_a_restart(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    folder = photos(tmp_path / "photos")
    args = ("--dataset", f"photos={folder}", "--cache", str(tmp_path / "cache"), "--seed", "0")
    server = ServerProcess(*args, log_dir=tmp_path).wait_serving()
    try:
        result = examples(server, "--filters", "0:3", "--top-k", "3", "--json")
        assert result.returncode == 0, result.stderr
        events = json.loads(result.stdout)
        assert server.metric("filtercast_index_builds_total", outcome="built") == 1
        assert server.handled("DatasetExamples", "OK") == 1
    finally:
        server.stop()
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "progress" and kinds[-1] == "summary"
    assert kinds.count("channel") == 3 and "progress" not in kinds[kinds.index("channel") :]
    summary = events[-1]["summary"]
    assert summary["images"] == 5 and summary["skipped"] == {"undecodable": 2}
    expected = brute_force(folder, [0, 1, 2])
    for event in events:
        if "channel" in event:
            channel = event["channel"]
            found = [e["image"] for e in channel["examples"]]
            assert found == expected[channel.get("channel", 0)][:3]
    server = ServerProcess(*args, log_dir=tmp_path).wait_serving()
    try:
        again = examples(server, "--filters", "0:3", "--out", str(tmp_path / "out"))
        assert again.returncode == 0, again.stderr
        listed = subprocess.run(
            [FILTERCAST, "models", "--server", server.address], capture_output=True, text=True
        )
        assert "vgg16 datasets: photos" in listed.stdout
        assert server.metric("filtercast_index_builds_total", outcome="store") == 1
        assert server.metric("filtercast_index_builds_total", outcome="built") == 0
    finally:
        server.stop()
    assert "5 images ranked, 2 skipped (stored index)" in again.stdout
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "channel_0000.png",
        "channel_0001.png",
        "channel_0002.png",
    ]

"""The client library and the `filtercast` CLI against real server subprocesses."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filtercast_client.client import AsyncClient, Client, FilterImage, Summary
from tests.support.outputs import MANIFEST_KEYS
from tests.support.processes import BLOCK_TENSORFLOW, ServerProcess, has_ipv6_loopback, wait_until

FILTERCAST = str(Path(sys.executable).parent / "filtercast")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([FILTERCAST, *args], capture_output=True, text=True, timeout=timeout)


def test_visualize_writes_the_render_format(server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        "visualize",
        "--server",
        server.address,
        "--filters",
        "0:6",
        "--size",
        "32",
        "--steps",
        "2",
        "--seed",
        "4",
        "--set",
        "revive=2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["seed"] == 4
    assert set(manifest) == MANIFEST_KEYS  # the same fields as render's
    assert manifest["weights"] == {"source": "random", "sha256": ""} and manifest["device"]
    assert (manifest["model"], manifest["layer"], manifest["preset"], manifest["precision"]) == (
        "vgg16",
        "block5_conv1",
        "classic",
        "float32",
    )
    assert manifest["params"]["size"] == 32 and manifest["requested"] == list(range(6))
    assert manifest["params"]["revive"] == 2
    assert all(0 <= record["revived"] <= 2 for record in manifest["filters"])
    assert sorted(f["index"] for f in manifest["filters"]) == list(range(6))
    for record in manifest["filters"]:
        if not record["dead"]:
            assert Image.open(out / record["file"]).size == (32, 32)
    if manifest["grid"]:
        n = manifest["grid"]["n"]
        assert Image.open(out / "grid.png").size == (32 * n + 5 * (n - 1),) * 2
    assert "wrote" in result.stdout and "filters/s" in result.stderr


def test_models_and_layers_tables(server) -> None:
    models = cli("models", "--server", server.address)
    assert models.returncode == 0 and "vgg16" in models.stdout and "random" in models.stdout
    assert "builtin" in models.stdout and "any x 3" in models.stdout
    layers = cli("layers", "--server", server.address, "--model", "vgg16")
    assert layers.returncode == 0
    row = next(line for line in layers.stdout.splitlines() if "block5_conv1" in line)
    assert "Conv2D" in row and "512" in row and "16" in row and "float32" in row


def test_server_errors_are_one_line_and_exit_non_zero(server, tmp_path: Path) -> None:
    result = cli("visualize", "--server", server.address, "--layer", "nope", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "INVALID_ARGUMENT: layer 'nope' not found in vgg16; valid layers:" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_a_clear_message(tmp_path: Path) -> None:
    from filtercast_client.local_server import free_port

    started = time.monotonic()
    result = cli(
        "visualize",
        "--server",
        f"127.0.0.1:{free_port()}",
        "--timeout",
        "20",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 30


def test_sigint_keeps_what_arrived(server, tmp_path: Path) -> None:
    cancelled_before = server.metric("filtercast_filters_total", outcome="cancelled")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            FILTERCAST,
            "visualize",
            "--server",
            server.address,
            "--filters",
            "0:64",
            "--size",
            "32",
            "--steps",
            "8",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        manifest_path = out / "manifest.json"
        if manifest_path.exists() and json.loads(manifest_path.read_text())["filters"]:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and 1 <= len(manifest["filters"]) < 64
    assert "interrupted" in stderr and "complete: false" in stderr
    for record in manifest["filters"]:
        assert record["dead"] or (out / record["file"]).exists()
    assert not list(out.glob("*.tmp")), "a temporary file was left behind"
    wait_until(
        lambda: server.metric("filtercast_filters_total", outcome="cancelled") > cancelled_before,
        "the server dropped the cancelled filters",
    )


def test_two_servers_share_the_load_round_robin(server, tmp_path: Path) -> None:
    second = ServerProcess(
        "--max-batch", "8", "--precision", "float32", log_dir=tmp_path
    ).wait_serving()
    try:
        before = [s.handled("VisualizeFilters", "OK") for s in (server, second)]
        with Client([server.address, second.address]) as client:
            for _ in range(6):
                events = list(client.visualize(filters=[1], overrides={"size": 32, "steps": 1}))
                assert isinstance(events[-1], Summary)
        after = [s.handled("VisualizeFilters", "OK") for s in (server, second)]
        assert all(a - b >= 1 for a, b in zip(after, before, strict=True)), (before, after)
    finally:
        assert second.stop() == 0


def test_the_library_works_where_tensorflow_cannot_be_imported(server) -> None:
    code = BLOCK_TENSORFLOW + (
        "from filtercast_client.client import Client, FilterImage\n"
        f"with Client({server.address!r}) as c:\n"
        "    names = [m.name for m in c.list_models()]\n"
        "    events = list(c.visualize(filters=[2], overrides={'size': 32, 'steps': 1},\n"
        "                              keep_dead_filters=True))\n"
        "assert names == ['vgg16'], names\n"
        "assert any(isinstance(e, FilterImage) and e.image.shape == (32, 32, 3) for e in events)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_async_client_streams_the_same_events(server) -> None:
    async def run() -> list:
        async with AsyncClient(server.address) as client:
            assert [m.name for m in await client.list_models()] == ["vgg16"]
            return [
                e
                async for e in client.visualize(
                    filters="0:3",
                    seed=9,
                    keep_dead_filters=True,
                    overrides={"size": 32, "steps": 2},
                )
            ]

    events = asyncio.run(run())
    images = {e.index: e.image for e in events if isinstance(e, FilterImage)}
    with Client(server.address) as client:
        again = {
            e.index: e.image
            for e in client.visualize(
                filters="0:3", seed=9, keep_dead_filters=True, overrides={"size": 32, "steps": 2}
            )
            if isinstance(e, FilterImage)
        }
    assert sorted(images) == [0, 1, 2]
    for index, image in images.items():
        assert np.abs(image.astype(int) - again[index].astype(int)).max() <= 2


def test_serve_flag_and_environment_errors_are_one_line() -> None:
    result = subprocess.run(
        [FILTERCAST, "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FILTERCAST_PORT": "abc"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "FILTERCAST_PORT" in result.stderr and "'abc' is not a valid integer" in result.stderr
    wrong = cli("serve", "--max-batch", "many")
    assert wrong.returncode == 2 and "Invalid value for '--max-batch'" in wrong.stderr


def test_help_imports_no_tensorflow_and_prints_no_noise() -> None:
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
        "from filtercast_client.cli import main\n"
        "for command in ('serve', 'render', 'visualize'):\n"
        "    try:\n"
        "        main([command, '--help'])\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, command\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "FILTERCAST_MAX_BATCH" in result.stdout and "--weights" in result.stdout


def test_the_servers_start_up_log_carries_no_tensorflow_noise(server) -> None:
    log = server.log_path.read_text()
    assert "listening on" in log
    assert "oneDNN" not in log and "absl::InitializeLog" not in log and "cuda" not in log


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_server_serves_grpc_and_metrics(tmp_path: Path) -> None:
    server = ServerProcess("--max-batch", "8", log_dir=tmp_path, host="::1").wait_serving()
    try:
        out = tmp_path / "out"
        result = cli(
            "visualize",
            "--server",
            server.address,
            "--filters",
            "0:2",
            "--size",
            "32",
            "--steps",
            "1",
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr
        assert (
            server.metric("filtercast_filters_total", outcome="ok")
            + server.metric("filtercast_filters_total", outcome="dead")
            == 2
        )
        assert '"client": "::1"' in server.log_path.read_text()
    finally:
        assert server.stop() == 0


def test_demo_open_serves_the_gallery_until_stopped(tmp_path: Path) -> None:
    import re
    import urllib.request

    demo = subprocess.Popen(
        [
            FILTERCAST,
            "demo",
            "--weights",
            "random",
            "--filters",
            "0:2",
            "--out",
            str(tmp_path),
            "--open",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "DISPLAY": ""},
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("gallery: "):
                break
        found = re.search(r"gallery: (http://\S+)", "".join(lines))
        assert found, "".join(lines)
        url = found.group(1)
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"filtercast gallery" in page.read()
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        assert len(manifest["filters"]) == 2
        demo.send_signal(signal.SIGTERM)  # as a service manager stops it
        assert demo.wait(60) == 0
        with pytest.raises(OSError):  # its server went with it
            urllib.request.urlopen(url, timeout=5)
    finally:
        demo.kill()

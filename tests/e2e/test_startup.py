"""A server that cannot start says why in one line naming the flag, and exits 2: a port
already taken on any of its listeners, or an address this host does not have."""

import json
import socket
import subprocess
import sys

import pytest

from filtercast_client.local_server import free_port


def start(*args: str) -> subprocess.CompletedProcess:
    """A server that must refuse to start: its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "filtercast_server", "--weights", "random", "--cache", "off", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("flag", ["--port", "--health-port", "--metrics-port", "--http-port"])
def test_a_port_in_use_is_one_line_naming_its_flag(flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": free_port(), "--metrics-port": 0, flag: port}
        done = start(*(str(part) for item in ports.items() for part in item))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, lines
    message = json.loads(lines[0])["message"]
    variable = "FILTERCAST_" + flag.removeprefix("--").replace("-", "_").upper()
    assert message == (
        f"cannot start: {flag} {port} ({variable}): cannot listen on 127.0.0.1:{port}: "
        "the port is in use"
    )


def test_an_address_this_host_lacks_is_one_line_too() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    done = start("--host", "192.0.2.1", "--port", str(free_port()), "--metrics-port", "0")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "--port" in json.loads(line)["message"] and "cannot listen on 192.0.2.1" in line

"""A real server holding thousands of half-sent HTTP bodies under a low open-file limit
keeps answering gRPC health checks, and its gateway's slots come back."""

import resource
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from filtercast_client.health import check
from tests.inprocess.test_http_limits import HALF_SENT
from tests.support.processes import ServerProcess, wait_until


def test_thousands_of_half_sent_bodies_leave_grpc_health_answering(tmp_path: Path) -> None:
    """2,048 descriptors for the server, 3,000 attackers: the gateway holds its cap
    (256), refuses the rest at once, and gRPC health keeps answering within 1 s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"this test opens 3,000 sockets; the open-file limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = ServerProcess(log_dir=tmp_path, http=True)
    resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (2048, 2048))
    sockets: list[socket.socket] = []
    latencies: list[float] = []
    try:
        server.wait_serving()
        probe = grpc.insecure_channel(server.address)

        def health() -> None:
            started = time.monotonic()
            assert check(probe, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING
            latencies.append(time.monotonic() - started)

        for n in range(3000):
            try:
                sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
                sock.sendall(HALF_SENT)
                sockets.append(sock)
            except OSError:
                pass  # refused and closed by the server already: what the cap does
            if n % 250 == 0:
                health()
        for _ in range(10):
            health()
        held = server.metric("filtercast_http_connections")
        refused = server.metric("filtercast_rejected_total", reason="http_connections")
        slow = server.metric("filtercast_rejected_total", reason="http_slow_body")
        # Each attacker is held (never past the cap), refused at the cap, or, when opening
        # 3,000 takes longer than --http-read-seconds (a busy machine), cut off with 408.
        assert held <= 256 and refused > 0
        assert held + refused + slow >= 3000 - 50
        with grpc.insecure_channel(server.address) as fresh:  # a new connection, as a kubelet
            assert check(fresh, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: server.metric("filtercast_http_connections") == 0, "the slots come back")
    with urllib.request.urlopen(server.http_url + "/v1/models", timeout=30) as response:
        assert response.status == 200
    assert server.stop() == 0
    errors = [line for line in server.log_path.read_text().splitlines() if '"ERROR"' in line]
    assert len(errors) < 20, errors[:5]
    assert max(latencies) < 1.0

"""Start a filtercast server in a subprocess on 127.0.0.1 and wait until it serves.

Used by `filtercast demo` and by the tests; needs the `server` extra installed
in the same Python.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from filtercast.contract import join_host_port
from filtercast_client.health import check


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`python -m filtercast_server` on free loopback ports; stop() sends SIGTERM.

    `host` is the loopback address to listen on: 127.0.0.1, or ::1 for IPv6.
    `http_port`: the HTTP gateway and gallery's port (0: a free one; None: off).
    """

    def __init__(
        self,
        *args: str,
        log_path: Path,
        metrics: bool = True,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        http_port: int | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port() if metrics else 0
        # None: no HTTP gateway; 0: on a free port.
        self.http_port = (http_port or free_port()) if http_port is not None else 0
        self.host = host
        self.address = join_host_port(host, self.port)
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "filtercast_server",
            "--host",
            host,
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--http-port",
            str(self.http_port),
            *args,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        # Reconnect fast: the default backoff (1 s and growing) would miss the
        # short NOT_SERVING window while the models load.
        self.channel = grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 100),
            ],
        )

    @property
    def http_url(self) -> str:
        """The HTTP gateway's (and gallery's) base URL; empty without one."""
        return f"http://{join_host_port(self.host, self.http_port)}" if self.http_port else ""

    def health(self, service: str = "") -> int:
        """The health service's status for `service` ("" = the whole server)."""
        return check(self.channel, service)

    def wait_serving(self, timeout: float = 300) -> "LocalServer":
        """Block until health says SERVING; raise with the log's tail if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{tail}")
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the server was not serving after {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait for the drain, return the exit code (SIGKILL past `timeout`)."""
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code

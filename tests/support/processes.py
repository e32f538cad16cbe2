"""A real filtercast server in a subprocess on 127.0.0.1, for integration tests."""

import os
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from filtercast.contract import join_host_port
from filtercast_client.local_server import LocalServer

SERVICE = "filtercast.v1.FilterVisualizerService"


def wait_until(condition: Callable[[], object], what: str, timeout: float = 120) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds.

    Tests wait for the state they need, never for a fixed time: a busy machine
    only makes them slower.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


class ServerProcess(LocalServer):
    """LocalServer with random weights on the CPU, plus metrics readers."""

    def __init__(
        self,
        *args: str,
        log_dir: Path,
        host: str = "127.0.0.1",
        http: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if "--weights" not in args:
            args = ("--weights", "random", *args)
        # Tests of other things start from nothing: no result cache unless asked for.
        if "--cache" not in args:
            args = ("--cache", "off", *args)
        log_path = log_dir / f"server-{os.getpid()}-{id(self)}.log"
        super().__init__(
            *args, log_path=log_path, host=host, http_port=0 if http else None, env=env
        )

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample as {(name, sorted labels): value}."""
        url = f"http://{join_host_port(self.host, self.metrics_port)}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def handled(self, method: str, code: str) -> float:
        """grpc_server_handled_total of one of our service's methods."""
        service = "grpc.health.v1.Health" if method in ("Check", "Watch") else SERVICE
        streams = ("VisualizeFilters", "DatasetExamples", "Watch")
        kind = "server_stream" if method in streams else "unary"
        return self.metric(
            "grpc_server_handled_total",
            grpc_code=code,
            grpc_method=method,
            grpc_service=service,
            grpc_type=kind,
        )


def has_ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


# Run first in a Python subprocess: TensorFlow and Keras then cannot be imported.
BLOCK_TENSORFLOW = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Block())
"""

"""A real Prometheus scrapes a real server; its query API sees what happened."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from filtercast_client.client import Client, Summary
from filtercast_client.local_server import free_port
from tests.serving import ServerProcess


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_sees_latency_and_outcomes(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus not installed (Debian package prometheus; .ci/run installs it)")
    server = ServerProcess("--precision", "float32", log_dir=tmp_path).wait_serving()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: filtercast\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.metrics_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        with Client(server.address) as client:
            for filters in ("0:2", "2:5", "5:6"):
                events = list(
                    client.visualize(
                        filters=filters, keep_dead_filters=True, overrides={"size": 32, "steps": 2}
                    )
                )
                assert isinstance(events[-1], Summary)
        ok_on_server = server.metric("filtercast_filters_total", outcome="ok")
        assert ok_on_server == 6
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ok = query(prom_port, 'filtercast_filters_total{outcome="ok"}')
                if ok and float(ok[0]["value"][1]) == ok_on_server:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail("Prometheus never saw the server's filter counter")
        p95 = query(
            prom_port,
            "histogram_quantile(0.95, sum by (le) (filtercast_request_duration_seconds_bucket))",
        )
        value = float(p95[0]["value"][1])
        count = float(
            query(prom_port, "sum(filtercast_request_duration_seconds_count)")[0]["value"][1]
        )
        assert count == 3
        assert 0 < value <= 10, value  # three small requests, each well under 10 s
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        assert server.stop() == 0

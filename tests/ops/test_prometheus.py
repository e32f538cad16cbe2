"""The shipped monitoring chain, end to end: a real Prometheus runs deploy/prometheus's own
config and rules against two real servers (targets through the shipped file discovery),
the recording rules answer 0 rather than nothing, the prometheus-adapter's queries find
the labels the HPA needs, and the no-replica alert goes pending when both servers stop."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from filtercast_client.client import Client, FilterImage, Summary
from filtercast_client.local_server import free_port
from tests.support.processes import ServerProcess

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAMESPACE = "filtercast-test"


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def series(port: int, match: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/series?" + urllib.parse.urlencode({"match[]": match})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(description: str, condition, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"Prometheus never showed {description}")


def shipped_config(directory: Path, servers: dict[str, ServerProcess]) -> Path:
    """deploy/prometheus/prometheus.yml as shipped, with 1 s intervals and its targets file."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus/rules.yml")]
    (directory / "targets").mkdir()
    targets = [
        {
            "targets": [f"127.0.0.1:{server.metrics_port}"],
            "labels": {"namespace": NAMESPACE, "pod": pod},
        }
        for pod, server in servers.items()
    ]
    (directory / "targets/filtercast.json").write_text(json.dumps(targets))
    for job in config["scrape_configs"]:  # 1 s discovery refresh instead of minutes
        for sd in job.get("file_sd_configs", []):
            sd["refresh_interval"] = "1s"
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def adapter_rule() -> dict:
    config = yaml.safe_load((DEPLOY / "k8s/adapter.yaml").read_text())
    (rule,) = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    return rule


def test_the_shipped_monitoring_chain_end_to_end(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus not installed (Debian package prometheus; .ci/run installs it)")
    servers = {
        pod: ServerProcess("--precision", "float32", log_dir=tmp_path)
        for pod in ("replica-a", "replica-b")
    }
    for server in servers.values():
        server.wait_serving()
    prom_port = free_port()
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={shipped_config(tmp_path, servers)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        for server in servers.values():
            with Client(server.address) as client:
                for filters in ("0:2", "2:5"):
                    events = list(
                        client.visualize(filters=filters, overrides={"size": 32, "steps": 2})
                    )
                    assert isinstance(events[-1], Summary)
                stream = client.visualize(filters="0:32", overrides={"size": 32, "steps": 8})
                for event in stream:  # a client that gives up: CANCELLED, not an error
                    if isinstance(event, FilterImage):
                        stream.cancel()
                        break

        def both_scraped() -> bool:
            up = query(prom_port, 'up{job="filtercast-file"} == 1')
            seen = query(prom_port, 'filtercast_filters_total{outcome="ok"} > 0')
            return len(up) == 2 and len(seen) == 2

        wait_for("both servers scraped through the shipped file discovery", both_scraped)
        # Recording rules answer 0, not nothing, when nothing failed.
        ratio = wait_for(
            "the error ratio recorded",
            lambda: query(prom_port, "filtercast:grpc_error_ratio:rate5m"),
        )
        assert [float(r["value"][1]) for r in ratio] == [0.0]
        shed = query(prom_port, "filtercast:shed_ratio:rate5m")
        assert [float(r["value"][1]) for r in shed] == [0.0]
        count = query(prom_port, "sum(filtercast_request_duration_seconds_count)")
        assert float(count[0]["value"][1]) == 6  # 2 ok + 1 cancelled, on each replica

        # prometheus-adapter: its seriesQuery finds both pods with the labels it maps to
        # Kubernetes objects, and its metricsQuery (templated as the adapter does) answers.
        rule = adapter_rule()
        found = series(prom_port, rule["seriesQuery"])
        assert {(s["namespace"], s["pod"]) for s in found} == {
            (NAMESPACE, "replica-a"),
            (NAMESPACE, "replica-b"),
        }
        metrics_query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", rule["name"]["as"])
            .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"replica-a|replica-b"')
            .replace("<<.GroupBy>>", "pod")
        )
        per_pod = query(prom_port, metrics_query)
        assert sorted(r["metric"]["pod"] for r in per_pod) == ["replica-a", "replica-b"]

        # Both replicas gone: the alert's condition holds and the alert goes pending.
        for server in servers.values():
            assert server.stop() == 0
        wait_for(
            "FiltercastNoHealthyReplica pending",
            lambda: query(prom_port, 'ALERTS{alertname="FiltercastNoHealthyReplica"}'),
        )
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        for server in servers.values():
            if server.process.poll() is None:
                server.stop()

"""Deployment artifacts: Dockerfile lint, manifests against their schemas and checkov's
policies, the pod's hardening, Prometheus config, rules and their unit tests, the
ServiceMonitor, and dashboards/rules that name only metrics the server exports."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from filtercast_server.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = ROOT / "deploy/k8s"
PROMETHEUS = ROOT / "deploy/prometheus"
SERVICE = "filtercast.v1.FilterVisualizerService"
# Each accepted checkov finding, reviewed: a new skip annotation must be added here too.
CHECKOV_SKIPS = {"CKV_K8S_11", "CKV_K8S_21", "CKV_K8S_43"}


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def manifests(*paths: Path) -> dict[tuple[str, str], dict]:
    """Every Kubernetes object in the files, by (kind, name)."""
    objects = {}
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[doc["kind"], doc["metadata"]["name"]] = doc
    return objects


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    return path


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run([BIN / "hadolint", ROOT / "Dockerfile"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_entry_points_exist() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert '"-m", "filtercast_server"' in text and '"-m", "filtercast_client.health"' in text
    for module in ("filtercast_server", "filtercast_client.health"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr


def test_kubernetes_manifests_match_their_schemas() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    result = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", *files], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for resource in (
        "serviceaccount/filtercast",
        "deployment/filtercast",
        "service/filtercast",
        "networkpolicy/filtercast",
        "poddisruptionbudget/filtercast",
        "horizontalpodautoscaler/filtercast",
        "persistentvolumeclaim/filtercast-weights",
        "configmap/prometheus-adapter-filtercast",
    ):
        assert f"passed for resource {resource}" in result.stdout + result.stderr, resource


def test_pod_is_hardened_and_wired_to_its_volumes_and_ports() -> None:
    objects = manifests(*K8S.glob("*.yaml"))
    deployment = objects["Deployment", "filtercast"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert (
        objects["ServiceAccount", pod["serviceAccountName"]]["automountServiceAccountToken"]
        is False
    )
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["privileged"] is False

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "health": 50052, "metrics": 9464}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FILTERCAST_HEALTH_PORT"] == "50052" and env["FILTERCAST_METRICS_PORT"] == "9464"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"], probe

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/tmp", "/home/filtercast/.keras", "/cache"):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    # The result cache lives on its own writable volume, bounded below its size limit.
    assert env["FILTERCAST_CACHE"] == "/cache"
    assert int(env["FILTERCAST_CACHE_MAX_BYTES"]) < 3 * 1024**3
    secrets = (
        ("/tls", "filtercast-tls"),
        ("/auth", "filtercast-auth"),
        ("/cache-secret", "filtercast-cache"),
    )
    for path, secret in secrets:
        assert mounts[path]["readOnly"] is True
        assert volumes[mounts[path]["name"]]["secret"]["secretName"] == secret
    # Cached pictures are authenticated with the mounted secret (shared by replicas).
    assert env["FILTERCAST_CACHE_SECRET_FILE"] == "/cache-secret/secret"
    assert (
        env["FILTERCAST_TLS_CERT"] == "/tls/tls.crt" and env["FILTERCAST_TLS_KEY"] == "/tls/tls.key"
    )
    assert env["FILTERCAST_AUTH_TOKENS_FILE"] == "/auth/tokens"
    assert mounts["/weights"]["readOnly"] is True
    claim = volumes[mounts["/weights"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert objects["PersistentVolumeClaim", claim]["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert env["FILTERCAST_WEIGHTS"].startswith("/weights/")

    service = objects["Service", "filtercast"]["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]}["metrics"] == 9464
    assert {p["targetPort"] for p in service["ports"]} <= set(ports)


def test_network_policy_admits_only_clients_and_prometheus() -> None:
    objects = manifests(K8S / "deployment.yaml")
    policy = objects["NetworkPolicy", "filtercast"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app": "filtercast"}
    assert policy["policyTypes"] == ["Ingress"]
    peers = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            peers[port["port"]] = rule["from"]
    client = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"filtercast-client": "true"}}}
    ]
    assert peers[50051] == client and peers[50052] == client
    assert peers[9464] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


def test_manifests_are_checkov_clean() -> None:
    venv_checkov = ROOT / "build/checkov-venv/bin/checkov"
    checkov = str(venv_checkov) if venv_checkov.exists() else shutil.which("checkov")
    if not checkov:
        pytest.skip("checkov not installed: run .ci/install-checkov.sh (build/checkov-venv)")
    # deploy/ holds deploy/k8s and the ServiceMonitor; files without a kind are ignored.
    # JSON rather than --compact --quiet text: quiet would drop the passed checks that show
    # every manifest was read. --skip-download: offline, no guideline/severity lookups.
    command = [checkov, "-d", "deploy", "--framework", "kubernetes", "--skip-download"]
    command += ["--output", "json"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov exited {result.returncode} with no report: {result.stderr[-4000:]}")
    summary, results = report["summary"], report["results"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in results.get("failed_checks", [])
    ]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, (summary, failed)
    assert result.returncode == 0, result.stderr[-4000:]
    # A manifest checkov cannot parse is silently left out: make sure every one was read.
    assert summary["resource_count"] >= 10, summary
    assert summary["passed"] >= 80, summary
    checked = {c["resource"] for c in results.get("passed_checks", [])}
    assert "Deployment.default.filtercast" in checked
    skipped = results.get("skipped_checks", [])
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 40, f"{check['check_id']} on {check['resource']}: justify the skip"
    assert {c["check_id"] for c in skipped} <= CHECKOV_SKIPS


@pytest.mark.parametrize("what", ["config", "rules"])
def test_prometheus_files_pass_promtool(what: str) -> None:
    path = PROMETHEUS / ("prometheus.yml" if what == "config" else "rules.yml")
    result = subprocess.run([promtool(), "check", what, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_accepts_the_example_targets(tmp_path: Path) -> None:
    example = PROMETHEUS / "targets/filtercast.json.example"
    for group in json.loads(example.read_text()):
        assert {"namespace", "pod"} <= group["labels"].keys(), group
        assert all(target.endswith(":9464") for target in group["targets"])
    shutil.copy(PROMETHEUS / "prometheus.yml", tmp_path)
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path)
    (tmp_path / "targets").mkdir()
    shutil.copy(example, tmp_path / "targets/filtercast.json")
    result = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr  # the targets file was found and read
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["filtercast-file"]["file_sd_configs"][0]["files"] == ["targets/*.json"]
    assert jobs["filtercast"]["dns_sd_configs"][0]["port"] == 9464
    assert not any("static_configs" in job for job in jobs.values())


def test_prometheus_rules_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(PROMETHEUS / "rules_test.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts and alerts <= firing and alerts <= quiet, (alerts - firing, alerts - quiet)


def test_service_monitor_scrapes_the_service_metrics_port() -> None:
    (monitor,) = yaml.safe_load_all(
        (ROOT / "deploy/prometheus-operator/servicemonitor.yaml").read_text()
    )
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    service = manifests(K8S / "deployment.yaml")["Service", "filtercast"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    endpoints = monitor["spec"]["endpoints"]
    assert endpoints and all(endpoint["port"] in port_names for endpoint in endpoints)
    assert [e["port"] for e in endpoints] == ["metrics"]


def test_dashboard_and_rules_name_only_exported_metrics() -> None:
    exported = exported_names()
    dashboard = json.loads((ROOT / "deploy/grafana/filtercast-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append((PROMETHEUS / "rules.yml").read_text())
    exprs.append((K8S / "adapter.yaml").read_text())
    pattern = r"\b(?:filtercast|grpc_server)_[a-z0-9_]+"
    used = {name for expr in exprs for name in re.findall(pattern, expr)}
    assert used and used <= exported, used - exported
    assert {n for n in used if n.startswith("grpc_server_")}, "gRPC metrics are used"
    services = {s for expr in exprs for s in re.findall(r'grpc_service="([^"]+)"', expr)}
    proto = (ROOT / "proto/filtercast/v1/filtercast.proto").read_text()
    package = re.search(r"^package ([\w.]+);", proto, re.M).group(1)
    name = re.search(r"^service (\w+)", proto, re.M).group(1)
    assert f"{package}.{name}" == SERVICE
    assert services == {SERVICE}
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Rejected requests by reason", "gRPC handling time p95 by method"} <= titles
    assert len(dashboard["panels"]) >= 10

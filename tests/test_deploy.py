"""Deployment artifacts: Dockerfile lint, manifests against their schemas, Prometheus
config and rules, and dashboards/rules that name only metrics the server exports."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filtercast_server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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
    manifests = sorted(str(p) for p in (ROOT / "deploy/k8s").glob("*.yaml"))
    result = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", *manifests], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("deployment", "service", "poddisruptionbudget", "horizontalpodautoscaler"):
        assert f"passed for resource {kind}/filtercast" in result.stdout + result.stderr


@pytest.mark.parametrize("what", ["config", "rules"])
def test_prometheus_files_pass_promtool(what: str) -> None:
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    path = ROOT / "deploy/prometheus" / ("prometheus.yml" if what == "config" else "rules.yml")
    result = subprocess.run(["promtool", "check", what, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_rules_name_only_exported_metrics() -> None:
    exported = exported_names()
    dashboard = json.loads((ROOT / "deploy/grafana/filtercast-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append((ROOT / "deploy/prometheus/rules.yml").read_text())
    exprs.append((ROOT / "deploy/k8s/adapter.yaml").read_text())
    used = {name for expr in exprs for name in re.findall(r"\bfiltercast_[a-z0-9_]+", expr)}
    assert used and used <= exported, used - exported
    assert len(dashboard["panels"]) >= 8

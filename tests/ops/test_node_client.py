"""A Node.js client written from the .proto alone gets the same field-level error details."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "build" / "node-client" / "node_modules"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.skipif(
    not (MODULES / "@grpc" / "grpc-js").is_dir(),
    reason="Node.js packages missing: run .ci/install-node-client.sh (build/node-client)",
)
def test_a_node_client_reads_field_violations_and_resources() -> None:
    with StandIn() as server:
        result = subprocess.run(
            [
                "node",
                str(ROOT / "tests" / "node" / "field_errors.js"),
                server.address,
                str(ROOT / "proto"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={"NODE_PATH": str(MODULES), "PATH": os.environ["PATH"]},
        )
    assert result.returncode == 0, result.stderr
    size, filters, model = (json.loads(line) for line in result.stdout.splitlines())
    assert size["code"] == "INVALID_ARGUMENT"
    violation = size["details"][0]
    assert violation["type"] == "google.rpc.BadRequest"
    assert violation["field_violations"][0]["field"] == "overrides.size"
    assert "out of range" in violation["field_violations"][0]["description"]
    assert filters["details"][0]["field_violations"][0]["field"] == "filters"
    assert model["code"] == "NOT_FOUND"
    resource = next(d for d in model["details"] if d["type"] == "google.rpc.ResourceInfo")
    assert (resource["resource_type"], resource["resource_name"]) == ("model", "nosuch")

"""The committed stubs are exactly what `make proto` generates from the .proto."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("filtercast_pb2.py", "filtercast_pb2.pyi", "filtercast_pb2_grpc.py")


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "proto/filtercast/v1/filtercast.proto"),
        ],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "filtercast/v1" / name).read_text()
        committed = (ROOT / "client/filtercast/v1" / name).read_text()
        assert fresh == committed, f"client/filtercast/v1/{name} is stale: run `make proto`"

"""Packaging: the client stays free of TensorFlow, the stubs match the module."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import filtercast_native._core as core
from tests.support.processes import BLOCK_TENSORFLOW

ROOT = Path(__file__).resolve().parents[2]


def test_client_imports_without_tensorflow() -> None:
    code = BLOCK_TENSORFLOW + (
        "import filtercast_client, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(filtercast_client.__path__, 'filtercast_client.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tensorflow_is_only_in_the_server_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("tensorflow") for dep in project["dependencies"])
    assert any(dep.startswith("tensorflow") for dep in project["optional-dependencies"]["server"])


def test_type_stubs_cover_exactly_the_native_functions() -> None:
    stub = ast.parse((ROOT / "native/python/filtercast_native/_core.pyi").read_text())
    stubbed = {node.name for node in stub.body if isinstance(node, ast.FunctionDef)}
    exported = {name for name in dir(core) if not name.startswith("_")}
    assert stubbed == exported


def test_one_version_everywhere() -> None:
    """pyproject.toml is the only version source: every package reports it."""
    import tomllib
    from pathlib import Path

    import filtercast_client
    import filtercast_native
    import filtercast_server

    declared = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    version = declared["project"]["version"]
    assert filtercast_client.__version__ == filtercast_server.__version__ == version
    assert filtercast_native.__version__ == version

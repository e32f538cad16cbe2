"""The import rules of the layout, read from the folders (docs/architecture.md says why).

A module's room is its folder: `engine/`, `serving/`, `observability/`, `cache/`,
or the root core; `main.py` is the composition root and `command.py` the command
line. Every module found by globbing is checked, so a new module follows its
folder's rules without anyone listing it.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server" / "filtercast_server"
FOLDERS = ("engine", "serving", "observability", "cache")
ENTRY_POINTS = {"main", "command", "__main__"}
TENSORFLOW = {"tensorflow", "keras"}

# What each room may import of filtercast_server when it runs. Imports under
# `if TYPE_CHECKING:` (types only) are free: they never execute.
MAY_IMPORT = {
    "core": {"core"},
    "engine": {"core", "engine"},
    "observability": {"core", "observability"},
    "cache": {"core", "cache", "observability"},
    "serving": {"core", "serving", "cache", "observability"},
    "command": {"core", "cache", "main"},
    "__main__": {"command"},
    "main": {"core", "engine", "serving", "observability", "cache"},
}


def room_of(module: str) -> str:
    """The room of a dotted filtercast_server module name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    if len(parts) > 1 and parts[1] in ENTRY_POINTS:
        return parts[1]
    return "core"


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(module, at run time) for every import in `path`, lazy ones included."""
    tree = ast.parse(path.read_text())
    types_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) not in types_only))
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) not in types_only) for alias in node.names]
    return found


def violations(package: Path) -> list[str]:
    """Every import in `package` (a filtercast_server tree) that breaks a folder rule."""
    broken = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).with_suffix("")
        module = ".".join(where.parts).removesuffix(".__init__")
        room = room_of(module)
        for imported, at_run_time in imports_of(path):
            top = imported.split(".")[0]
            if top in TENSORFLOW and room != "engine":
                broken.append(f"{where}: imports {imported}; only engine/ may")
            elif top == "filtercast_server" and at_run_time:
                target = room_of(imported)
                if target == "main" and room != "command":
                    broken.append(f"{where}: imports the composition root")
                elif target not in MAY_IMPORT[room] and target != room:
                    broken.append(f"{where}: {room} imports {imported} ({target}) at run time")
    return broken


def test_every_module_keeps_to_its_folders_rules() -> None:
    assert violations(SERVER) == []


@pytest.mark.parametrize(
    ("where", "line", "complaint"),
    [
        ("serving/leak.py", "import tensorflow as tf", "only engine/ may"),
        ("planning_extra.py", "from keras import ops", "only engine/ may"),
        ("engine/back.py", "from filtercast_server.serving.wire import model_info", "engine"),
        ("cache/loop.py", "from filtercast_server.main import serve", "composition root"),
        ("selection_extra.py", "from filtercast_server.engine.models import LoadedModel", "core"),
    ],
)
def test_a_rule_broken_is_reported(tmp_path: Path, where: str, line: str, complaint: str) -> None:
    package = tmp_path / "filtercast_server"
    (package / where).parent.mkdir(parents=True, exist_ok=True)
    (package / where).write_text(f"{line}\n")
    (found,) = violations(package)
    assert complaint in found and where.removesuffix(".py") in found


def test_types_only_imports_are_free(tmp_path: Path) -> None:
    package = tmp_path / "filtercast_server"
    package.mkdir()
    (package / "planning.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from filtercast_server.engine.models import LoadedModel\n"
    )
    assert violations(package) == []


def test_everything_but_the_engine_runs_without_tensorflow() -> None:
    """What the rules promise, at run time: each module outside engine/ (and the root
    that builds the engine) imports with TensorFlow and Keras made unimportable."""
    modules = [
        ".".join(path.relative_to(SERVER.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted(SERVER.rglob("*.py"))
        if "engine" not in path.relative_to(SERVER).parts[:1]
        and path.name not in ("main.py", "__main__.py")
    ]
    code = (
        "import importlib, sys\n"
        "sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import filtercast_client.cli\n"
        "print(len(sys.modules))\n"
    )
    # In a fresh interpreter: this one may have imported TensorFlow for another tier.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_client_and_the_server_depend_one_way() -> None:
    """The server never imports the client; the shared modules import neither; of the
    client library only the CLI reaches the server package (serve, render), when run."""
    client = ROOT / "client"
    server_imports = {m.split(".")[0] for p in SERVER.rglob("*.py") for m, _ in imports_of(p)}
    assert "filtercast_client" not in server_imports
    for neutral in ("contract.py", "manifest.py", "grid.py"):
        imported = {m.split(".")[0] for m, _ in imports_of(client / "filtercast" / neutral)}
        assert not imported & {"filtercast_client", "filtercast_server", "tensorflow", "grpc"}
    for path in (client / "filtercast_client").glob("*.py"):
        imported = {m.split(".")[0] for m, _ in imports_of(path)}
        assert path.name == "cli.py" or "filtercast_server" not in imported, path.name

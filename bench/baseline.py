"""Running an earlier commit's server and client packages beside this tree's, for benchmarks.

The baseline's packages come from a git worktree (build/bench-ref); a
sitecustomize placed first on its PYTHONPATH puts them ahead of the editable
install's own finder. The native module and the generated stubs are this
tree's (the stubs only ever gain fields).
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Imports filtercast_server / filtercast_client (and their submodules) from the
# baseline tree, ahead of the editable install's own finder.
BASELINE_FINDER = """
import importlib.machinery, os, sys

_ROOTS = {
    "filtercast_server": os.path.join(os.environ["FILTERCAST_BASELINE_TREE"], "server"),
    "filtercast_client": os.path.join(os.environ["FILTERCAST_BASELINE_TREE"], "client"),
}


class BaselineFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in _ROOTS:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path or [_ROOTS[top]])


sys.meta_path.insert(0, BaselineFinder)
"""


def baseline_env(tree: Path) -> dict[str, str]:
    """Environment that runs the baseline tree's packages."""
    boot = ROOT / "build/bench-ref-boot"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "sitecustomize.py").write_text(BASELINE_FINDER)
    return {"PYTHONPATH": str(boot), "FILTERCAST_BASELINE_TREE": str(tree)}


def baseline_tree(ref: str) -> Path:
    tree = ROOT / "build/bench-ref"
    if tree.exists():
        subprocess.run(["git", "-C", str(tree), "checkout", "--detach", ref], check=True)
    else:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True
        )
    return tree

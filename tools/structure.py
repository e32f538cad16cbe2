"""The product's longest functions and largest modules, read with `ast`.

    python tools/structure.py [--top N] [--check]

Reads the Python packages of server/, client/ and native/python (generated
stubs left out). Prints the N longest functions (lines from `def` to its
last line) and the N largest modules (lines). A function that is mostly a
declarative table (a dict or list literal of at least 30 lines) is listed
but marked. With --check it exits 1 when a function other than those is
over FUNCTION_LIMIT lines or a module over MODULE_LIMIT.
"""

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "client", "native/python")
FUNCTION_LIMIT = 60
MODULE_LIMIT = 450
TABLE_LINES = 30


def sources() -> list[Path]:
    """Every product module (no generated stubs, no tests)."""
    found = []
    for package in PACKAGES:
        found += [p for p in (ROOT / package).rglob("*.py") if "_pb2" not in p.name]
    return sorted(found)


def _is_table(function: ast.AST) -> bool:
    """Whether most of `function` is one literal table."""
    size = function.end_lineno - function.lineno + 1  # type: ignore[attr-defined]
    for node in ast.walk(function):
        literal = isinstance(node, ast.Dict | ast.List | ast.Tuple | ast.Set)
        if literal and node.end_lineno - node.lineno + 1 >= max(TABLE_LINES, size // 2):  # type: ignore[attr-defined]
            return True
    return False


def measure() -> tuple[list[tuple[int, str, bool]], list[tuple[int, str]]]:
    """(lines, where, is a table) per function; (lines, path) per module."""
    functions, modules = [], []
    for path in sources():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        modules.append((text.count("\n"), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                functions.append((lines, f"{name}:{node.lineno} {node.name}", _is_table(node)))
    return sorted(functions, reverse=True), sorted(modules, reverse=True)


def main() -> int:
    """Print the longest functions and largest modules; with --check, exit 1 past the limits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="fail past the limits")
    args = parser.parse_args()
    functions, modules = measure()
    print(f"longest functions (limit {FUNCTION_LIMIT} lines, tables excepted):")
    for lines, where, table in functions[: args.top]:
        print(f"  {lines:4d}  {where}{'  (a table)' if table else ''}")
    print(f"largest modules (limit {MODULE_LIMIT} lines):")
    for lines, where in modules[: args.top]:
        print(f"  {lines:4d}  {where}")
    over = [f for f in functions if f[0] > FUNCTION_LIMIT and not f[2]]
    over_modules = [m for m in modules if m[0] > MODULE_LIMIT]
    if args.check and (over or over_modules):
        for lines, where, _ in over:
            print(f"over the limit: {where} ({lines} lines)", file=sys.stderr)
        for lines, where in over_modules:
            print(f"over the limit: {where} ({lines} lines)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""List the benchmarks in bench/, or run one: `make bench`, `make bench RUN=NAME ARGS=...`.

Every script in bench/ that is a benchmark (the helpers it shares are not
listed) says in its docstring what it compares side by side and how to run
it; its figures go to docs/benchmarks.md with the command.
"""

import argparse
import ast
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
HELPERS = {"baseline.py"}  # imported by the benchmarks; peer_*.py run in the peers' own venvs


def benchmarks() -> dict[str, str]:
    """Name -> the first line of its docstring, for every benchmark script."""
    found = {}
    for path in sorted(BENCH.glob("*.py")):
        if path.name not in HELPERS and not path.name.startswith(("_", "peer_")):
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            found[path.stem] = docstring.splitlines()[0] if docstring else ""
    return found


def main() -> int:
    """Print the list; with --run, run that benchmark with the arguments after it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", metavar="NAME", help="the benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its own arguments")
    options = parser.parse_args()
    known = benchmarks()
    if options.run is None:
        width = max(map(len, known))
        for name, summary in known.items():
            print(f"  {name:<{width}}  {summary}")
        print("\nrun one: make bench RUN=NAME [ARGS='...'] (its --help says what it takes)")
        return 0
    if options.run not in known:
        print(f"no benchmark {options.run!r}; there are: {', '.join(known)}", file=sys.stderr)
        return 2
    script = BENCH / f"{options.run}.py"
    return subprocess.run([sys.executable, str(script), *options.args]).returncode


if __name__ == "__main__":
    sys.exit(main())

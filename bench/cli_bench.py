"""How quickly the command line answers `--help`, and how much noise it prints, beside a baseline.

    .venv/bin/python bench/cli_bench.py [--baseline-ref 2651a53] [--runs 5]

Each command runs in a fresh process (as a user types it), `--runs` times;
the median wall time and the lines written to stderr are reported for this
tree and, with `--baseline-ref`, for that commit's packages side by side.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from baseline import baseline_env, baseline_tree

COMMANDS = (["serve", "--help"], ["render", "--help"], ["visualize", "--help"], ["--help"])


def run(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    code = f"from filtercast_client.cli import main; main({command!r})"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return seconds, len(done.stderr.splitlines())


def measure(env: dict[str, str], runs: int) -> dict[str, tuple[float, int]]:
    report = {}
    for command in COMMANDS:
        samples = [run(command, env) for _ in range(runs)]
        report[" ".join(command)] = (
            statistics.median(s for s, _ in samples),
            max(lines for _, lines in samples),
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="git ref to measure beside this tree")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    this = measure({}, args.runs)
    before = (
        measure(baseline_env(baseline_tree(args.baseline_ref)), args.runs)
        if args.baseline_ref
        else {}
    )
    print(f"{'command':<22} {'this tree':>12} {'stderr':>7}", end="")
    print(f" {'baseline':>12} {'stderr':>7} {'ratio':>7}" if before else "")
    for name, (seconds, lines) in this.items():
        row = f"filtercast {name:<11} {seconds:>10.2f} s {lines:>7}"
        if name in before:
            old, old_lines = before[name]
            row += f" {old:>10.2f} s {old_lines:>7} {old / seconds:>6.1f}x"
        print(row)


if __name__ == "__main__":
    main()

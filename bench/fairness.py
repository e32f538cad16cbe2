"""Small-behind-big latency: a tiny request's wait while a big one of other parameters runs.

This tree's server and, side by side in the same run, an earlier commit's.

    .venv/bin/python bench/fairness.py [--baseline-ref HEAD~1] [--json PATH]

The big request is the one the outside probe used: 8 filters of 256 px, 30 steps
(VGG16 block5_conv1, classic). The small one is 1 filter of 32 px, 2 steps. Each
server is started fresh (random weights, float32 on this CPU: timing only),
warmed up, then: the small request alone (x3), and the small request sent 1 s
after the big one started (x3). Reports the small request's time to first
filter and total time, and the big request's total.

The baseline runs the server and client packages of `--baseline-ref` from a
git worktree (build/bench-ref), with this tree's native module (unchanged by
the fairness work); a sitecustomize placed first on its PYTHONPATH puts an
import finder for those two packages ahead of the editable install's. Only
flags both versions know are passed.
"""

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from baseline import baseline_env, baseline_tree

from filtercast_client.client import Client, FilterImage
from filtercast_client.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
BIG = {"filters": "0:8", "overrides": {"size": 256, "steps": 30}}
SMALL = {"filters": "100:101", "overrides": {"size": 32, "steps": 2}}
REPEATS = 3


def timed(address: str, request: dict) -> tuple[float, float]:
    """(time to first filter, total) of one request, in seconds."""
    started, first = time.monotonic(), None
    with Client(address) as client:
        for event in client.visualize(keep_dead_filters=True, grid=False, **request):
            if isinstance(event, FilterImage) and first is None:
                first = time.monotonic() - started
    return first, time.monotonic() - started


def measure(address: str) -> dict:
    """Small alone, then small behind big, REPEATS times each."""
    timed(address, SMALL)  # warm-up: traces the 32 px step
    timed(address, {**BIG, "filters": "0:1", "overrides": {"size": 256, "steps": 1}})
    alone = [timed(address, SMALL) for _ in range(REPEATS)]
    behind, big = [], []
    for _ in range(REPEATS):
        result: list[tuple[float, float]] = []
        thread = threading.Thread(target=lambda out=result: out.append(timed(address, BIG)))
        thread.start()
        time.sleep(1.0)
        behind.append(timed(address, SMALL))
        thread.join()
        big.append(result[0])
    return {
        "small_alone_ttff_s": statistics.median(t for t, _ in alone),
        "small_behind_big_ttff_s": statistics.median(t for t, _ in behind),
        "small_behind_big_ttff_max_s": max(t for t, _ in behind),
        "small_behind_big_total_s": statistics.median(total for _, total in behind),
        "big_total_s": statistics.median(total for _, total in big),
    }


def run_server(label: str, env: dict[str, str] | None) -> dict:
    server = LocalServer(
        "--cache",
        "off",
        "--weights",
        "random",
        "--precision",
        "float32",
        log_path=Path(f"/tmp/filtercast-fairness-{label}.log"),
        env={"CUDA_VISIBLE_DEVICES": "", **(env or {})},
    )
    try:
        server.wait_serving()
        return measure(server.address)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="git ref whose server to measure beside this one")
    parser.add_argument("--json")
    args = parser.parse_args()
    report = {}
    if args.baseline_ref:
        env = baseline_env(baseline_tree(args.baseline_ref))
        report[f"baseline ({args.baseline_ref})"] = run_server("baseline", env)
    report["this tree"] = run_server("current", None)
    print(json.dumps(report, indent=2))
    if args.baseline_ref:
        before, after = report[f"baseline ({args.baseline_ref})"], report["this tree"]
        ratio = before["small_behind_big_ttff_s"] / after["small_behind_big_ttff_s"]
        print(f"small-behind-big time to first filter: {ratio:.1f}x shorter than the baseline")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

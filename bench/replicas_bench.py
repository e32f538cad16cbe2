"""Whole layers across replicas: one request spread over two one-core servers against one.

This machine stands in for two: each server process is pinned to one core
(its CPU affinity, inherited from this process when it starts) with
TensorFlow's thread pools at one thread. The same robust request (real
ImageNet VGG16 block5_conv1, cache off, one seed) goes to one such server,
then spread (Client.spread) over two of them, in one run; the pictures of
both are compared filter by filter (the engine's batch-independence
tolerance: 2 levels of 255, tests/engine/test_robust.py).

    .venv/bin/python bench/replicas_bench.py [--filters 0:64] [--steps 6] [--size 128]

At the preset's 45 steps one one-core server takes about half an hour for 64
filters here, so the default runs fewer steps: the work per step is what is
shared out, and the ratio is per step.
"""

import argparse
import os
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from filtercast_client import Client, FilterImage, Summary
from filtercast_client.events import Event
from filtercast_client.local_server import LocalServer

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
TOLERANCE = 2  # pixel levels, as the engine's batch-independence test allows


def one_core_server(core: int, weights: str, log: Path) -> LocalServer:
    """A server process on `core` alone (the affinity a child inherits at its start)."""
    every = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        server = LocalServer(
            "--cache", "off", "--weights", weights, log_path=log, metrics=False,
            env=ONE_THREAD,
        )  # fmt: skip
    finally:
        os.sched_setaffinity(0, every)
    return server


def timed(stream: Iterable[Event]) -> tuple[float, dict[int, np.ndarray | None], Summary]:
    """Seconds to the stream's end, each filter's picture, and its summary."""
    started = time.perf_counter()
    pictures: dict[int, np.ndarray | None] = {}
    summary = None
    for event in stream:
        if isinstance(event, FilterImage):
            pictures[event.index] = event.image
        elif isinstance(event, Summary):
            summary = event
    assert summary is not None
    return time.perf_counter() - started, pictures, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--filters", default="0:64")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("two cores are needed: one per replica")
    weights = args.weights if Path(args.weights).is_file() else "random"
    request = {
        "preset": "robust", "filters": args.filters, "steps": args.steps, "size": args.size,
        "seed": 1, "grid": True,
    }  # fmt: skip
    with ExitStack() as stack:
        servers = [
            one_core_server(core, weights, Path(f"/tmp/filtercast-replica-{core}.log"))
            for core in (0, 1)
        ]
        for server in servers:
            stack.callback(server.stop)
            server.wait_serving()
        warm = {**request, "filters": "0:2", "steps": 1}
        for server in servers:  # the trace of each, outside the timings
            with Client(server.address) as client:
                timed(client.visualize(**warm))
        with Client(servers[0].address) as client:
            one, alone, _ = timed(client.visualize(**request))
        with Client([s.address for s in servers]) as client:
            two, spread, summary = timed(client.spread(**request))
    assert sorted(alone) == sorted(spread)
    worst = max(
        int(np.abs(alone[i].astype(int) - spread[i].astype(int)).max())
        for i in alone
        if alone[i] is not None and spread[i] is not None
    )
    print(
        f"robust, filters {args.filters}, {args.size} px, {args.steps} steps; weights "
        f"{Path(weights).name}; servers of one core and one TensorFlow thread each\n"
        f"  one server          {one:8.2f} s\n"
        f"  spread over two     {two:8.2f} s  ({one / two:.2f}x)\n"
        f"  pictures: {len(spread)} filters, largest difference {worst} levels "
        f"({'within' if worst <= TOLERANCE else 'beyond'} the {TOLERANCE}-level tolerance); "
        f"summary kept {summary.kept}, dead {summary.dead}"
    )


if __name__ == "__main__":
    main()

"""Serving overhead and cross-request batching, side by side in one run.

1. The same 32 filters through gRPC (server subprocess, real client) vs the
   engine alone in this process: overhead of the service.
2. 8 clients asking for 4 filters each at once vs the same 8 requests one
   after another: what sharing batches across requests buys.

    .venv/bin/python bench/serve_bench.py [--weights PATH] [--size 128] [--steps 20]
"""

import argparse
import threading
import time
from pathlib import Path

from filtercast_client.client import Client, FilterImage
from filtercast_client.local_server import LocalServer

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)


def engine_alone(weights: str, overrides: dict, filters: str, precision: str) -> float:
    from filtercast_server.ascent import AscentEngine
    from filtercast_server.devices import select_device
    from filtercast_server.models import LoadedModel
    from filtercast_server.planning import make_plan

    device = select_device("auto")
    models = {"vgg16": LoadedModel("vgg16", weights, device)}
    engine = AscentEngine(models, *device.batch_limits())  # the server's defaults
    list(engine.run(make_plan(models, "classic", {**overrides, "steps": 1}, "0:2", precision, 0)))
    plan = make_plan(models, "classic", overrides, filters, precision, seed=0)
    start = time.perf_counter()
    list(engine.run(plan))
    return time.perf_counter() - start


def one_request(address: str, filters: list[int], overrides: dict) -> list[float]:
    """Seconds from the call to each FilterResult."""
    started, arrivals = time.perf_counter(), []
    with Client(address) as client:
        for event in client.visualize(filters=filters, overrides=overrides, seed=0, grid=False):
            if isinstance(event, FilterImage):
                arrivals.append(time.perf_counter() - started)
    return arrivals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    overrides = {"size": args.size, "steps": args.steps}
    weights = args.weights if Path(args.weights).is_file() else "random"

    t_engine = engine_alone(weights, overrides, "0:32", args.precision)
    server = LocalServer(
        "--weights",
        weights,
        "--precision",
        args.precision,
        log_path=Path("/tmp/filtercast-serve-bench.log"),
        metrics=False,
    ).wait_serving()
    try:
        one_request(server.address, [0, 1], {**overrides, "steps": 1})  # warm
        start = time.perf_counter()
        arrivals = one_request(server.address, list(range(32)), overrides)
        t_grpc = time.perf_counter() - start

        requests = [list(range(k * 4, k * 4 + 4)) for k in range(8)]
        start = time.perf_counter()
        for filters in requests:
            one_request(server.address, filters, overrides)
        t_sequential = time.perf_counter() - start

        threads = [
            threading.Thread(target=one_request, args=(server.address, f, overrides))
            for f in requests
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_concurrent = time.perf_counter() - start
    finally:
        server.stop()

    print(
        f"weights: {weights}; classic vgg16/block5_conv1, {args.size} px, {args.steps} steps, "
        f"precision {args.precision}, 32 filters"
    )
    print(f"{'case':<44}{'seconds':>9}{'filters/s':>11}{'ratio':>8}")
    rows = [
        ("engine alone (in process)", t_engine, 1.0),
        ("through gRPC (one request of 32)", t_grpc, t_engine / t_grpc),
        ("8 requests of 4, one after another", t_sequential, 1.0),
        ("8 requests of 4, 8 concurrent clients", t_concurrent, t_sequential / t_concurrent),
    ]
    for name, seconds, ratio in rows:
        print(f"{name:<44}{seconds:>9.2f}{32 / seconds:>11.2f}{ratio:>7.2f}x")
    print(f"gRPC overhead: {t_grpc / t_engine - 1:+.1%}")
    print(
        f"32-filter stream: first result after {arrivals[0]:.2f} s, last after {arrivals[-1]:.2f} s"
    )


if __name__ == "__main__":
    main()

"""Serving overhead, cross-request batching and the result cache, side by side in one run.

serving:
1. The same 32 filters through gRPC (server subprocess, real client) vs the
   engine alone in this process: overhead of the service.
2. 8 clients asking for 4 filters each at once vs the same 8 requests one
   after another: what sharing batches across requests buys.
cache (classic, 64 filters):
3. Cold: the same request on a server with the cache off and one with an
   empty cache, alternating, each pair with a new seed: the cache's overhead.
4. Warm: the request repeated on the caching server: its time against the
   cold one, and the time to its first filter over gRPC and HTTP/NDJSON.
repeats:
5. 200 identical cached requests at once (64 filters each) on a directory
   cache: lookup faults, filters computed again, and the requests' times.
previews (robust, 100 steps, 4 filters, cache off):
6. The same request with preview_every=10 and without, alternating, each
   pair with a new seed: what previews cost, and the time to the first one.
7. In the engine alone: a preview's pictures against a step of the same
   batch (median of 12 each, interleaved): the engine's share, free of the
   noise that whole requests carry.

    .venv/bin/python bench/serve_bench.py [--only serving|cache|repeats|previews]
        [--weights PATH] [--size 128] [--steps 20] [--pairs 2] [--repeats 200]
"""

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from filtercast_client import Client, FilterImage, FilterPreview
from filtercast_client.local_server import LocalServer

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)


def engine_alone(weights: str, overrides: dict, filters: str, precision: str) -> float:
    from filtercast_server.engine.ascent import AscentEngine
    from filtercast_server.engine.devices import select_device
    from filtercast_server.engine.models import LoadedModel
    from filtercast_server.planning import make_plan

    device = select_device("auto")
    models = {"vgg16": LoadedModel("vgg16", weights, device)}
    engine = AscentEngine(models, *device.batch_limits())  # the server's defaults
    list(
        engine.run(
            make_plan(
                models,
                preset="classic",
                overrides={**overrides, "steps": 1},
                filters="0:2",
                precision=precision,
                seed=0,
            )
        )
    )
    plan = make_plan(
        models, preset="classic", overrides=overrides, filters=filters, precision=precision, seed=0
    )
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


def serving_rows(weights: str, overrides: dict, precision: str) -> None:
    """Rows 1 and 2: gRPC against the engine alone; concurrent against sequential."""
    t_engine = engine_alone(weights, overrides, "0:32", precision)
    server = LocalServer(
        "--cache",
        "off",
        "--weights",
        weights,
        "--precision",
        precision,
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


def timed_stream(client: Client, overrides: dict, seed: int, filters: int) -> tuple[float, float]:
    """(seconds to the first FilterResult, seconds to the end) of one classic request."""
    started, first = time.perf_counter(), None
    for event in client.visualize(
        filters=f"0:{filters}", overrides=overrides, seed=seed, layer="block5_conv1"
    ):
        if first is None and isinstance(event, FilterImage):
            first = time.perf_counter() - started
    assert first is not None
    return first, time.perf_counter() - started


def timed_http(url: str, overrides: dict, seed: int, filters: int) -> tuple[float, float]:
    """The same over the HTTP gateway (NDJSON)."""
    body = {
        "layer": "block5_conv1",
        "filters": {"range": {"start": 0, "stop": filters}},
        "seed": str(seed),
        "overrides": overrides,
    }
    request = urllib.request.Request(
        f"{url}/v1/visualize",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    started, first = time.perf_counter(), None
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if first is None and b'"filter"' in line[:20]:
                first = time.perf_counter() - started
    assert first is not None
    return first, time.perf_counter() - started


def cache_rows(weights: str, overrides: dict, precision: str, pairs: int) -> None:
    """Rows 3 and 4: the cache's cold overhead and what a warm cache gives."""
    filters = 64
    common = ("--weights", weights, "--precision", precision)
    folder = tempfile.mkdtemp(prefix="filtercast-cache-bench-")
    off = LocalServer(
        "--cache", "off", *common, log_path=Path("/tmp/filtercast-bench-off.log"), metrics=False
    )
    on = LocalServer(
        "--cache",
        folder,
        *common,
        log_path=Path("/tmp/filtercast-bench-on.log"),
        metrics=False,
        http_port=0,
    )
    try:
        off.wait_serving()
        on.wait_serving()
        with Client(off.address) as to_off, Client(on.address) as to_on:
            for client in (to_off, to_on):  # trace the step outside the timings
                timed_stream(client, {**overrides, "steps": 1}, 10_000, 2)
            cold_off, cold_on = [], []
            for pair in range(pairs):
                order = [(to_off, cold_off), (to_on, cold_on)]
                for client, times in order if pair % 2 == 0 else order[::-1]:
                    times.append(timed_stream(client, overrides, pair, filters)[1])
                    which = "on " if client is to_on else "off"
                    print(f"  cold pair {pair}: cache {which} {times[-1]:.2f} s")
            warm = [timed_stream(to_on, overrides, 0, filters) for _ in range(20)]
        fresh = []
        for _ in range(20):  # a new client (and connection) per request
            with Client(on.address) as client:
                fresh.append(timed_stream(client, overrides, 0, filters))
        http = [timed_http(on.http_url, overrides, 0, filters) for _ in range(20)]
    finally:
        off.stop()
        on.stop()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    t_off, t_on = median(cold_off), median(cold_on)
    t_warm = median([w[1] for w in warm])
    print(f"{'case (classic, 64 filters)':<52}{'seconds':>10}{'ratio':>9}")
    rows = [
        (f"cache off (median of {pairs})", t_off, 1.0),
        (f"cache on, cold (median of {pairs})", t_on, t_on / t_off),
        ("cache on, warm: whole stream, gRPC (median of 20)", t_warm, t_warm / t_on),
        ("  time to first filter, gRPC, open channel", median([w[0] for w in warm]), None),
        ("  time to first filter, gRPC, new client", median([f[0] for f in fresh]), None),
        ("  whole stream, gRPC, new client", median([f[1] for f in fresh]), None),
        ("  time to first filter, HTTP NDJSON", median([h[0] for h in http]), None),
        ("  whole stream, HTTP NDJSON", median([h[1] for h in http]), None),
    ]
    for name, seconds, ratio in rows:
        shown = f"{ratio:>8.4f}x" if ratio is not None else ""
        print(f"{name:<52}{seconds:>10.4f}{shown}")
    print(f"cold overhead of the cache: {t_on / t_off - 1:+.1%}; warm repeat: {t_warm / t_on:.2%}")


REPEAT_FILTERS = 64


def repeat_rows(weights: str, overrides: dict, precision: str, repeats: int) -> None:
    """Row 5: many identical cached requests at once against one directory cache."""
    folder = tempfile.mkdtemp(prefix="filtercast-repeats-bench-")
    server = LocalServer(
        "--cache",
        folder,
        "--weights",
        weights,
        "--precision",
        precision,
        "--max-concurrent-streams",
        str(repeats + 8),
        "--client-max-streams",
        str(repeats + 8),
        log_path=Path("/tmp/filtercast-bench-repeats.log"),
    )
    metric = re.compile(
        r"^filtercast_(cache_errors_total\{operation=\"lookup\"\}|filters_total"
        r"\{outcome=\"ok\"\}|cache_hits_total) (\S+)$",
        re.M,
    )

    def counts() -> dict[str, float]:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return {m.group(1).split("{")[0]: float(m.group(2)) for m in metric.finditer(text)}

    try:
        server.wait_serving()
        with Client(server.address) as client:
            timed_stream(client, overrides, 0, REPEAT_FILTERS)  # computed once, then cached
        time.sleep(2)  # the writer thread stores them
        before = counts()
        times: list[float] = []
        lock = threading.Lock()

        def one() -> None:
            with Client(server.address) as client:
                seconds = timed_stream(client, overrides, 0, REPEAT_FILTERS)[1]
            with lock:
                times.append(seconds)

        started = time.perf_counter()
        threads = [threading.Thread(target=one) for _ in range(repeats)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        after = counts()
    finally:
        server.stop()
    times.sort()
    print(f"{repeats} concurrent cached repeats of {REPEAT_FILTERS} filters, directory cache:")
    print(f"  lookup faults: {after['cache_errors_total'] - before['cache_errors_total']:.0f}")
    print(f"  filters computed again: {after['filters_total'] - before['filters_total']:.0f}")
    print(f"  cache hits: {after['cache_hits_total'] - before['cache_hits_total']:.0f}")
    print(
        f"  all done in {wall:.2f} s; per request p50 {times[len(times) // 2]:.2f} s, "
        f"max {times[-1]:.2f} s"
    )


def timed_robust(client: Client, seed: int, preview_every: int) -> tuple[float, float, int]:
    """(seconds to the first event with a picture, to the end, previews) of one robust request."""
    started, first, previews = time.perf_counter(), None, 0
    for event in client.visualize(
        preset="robust", filters="0:4", seed=seed, preview_every=preview_every
    ):
        if first is None and isinstance(event, FilterImage | FilterPreview):
            first = time.perf_counter() - started
        previews += isinstance(event, FilterPreview)
    assert first is not None
    return first, time.perf_counter() - started, previews


def preview_rows(weights: str, precision: str, pairs: int) -> None:
    """Row 6: robust with previews every 10 steps against without, alternating."""
    server = LocalServer(
        "--cache", "off", "--weights", weights, "--precision", precision,
        log_path=Path("/tmp/filtercast-bench-previews.log"), metrics=False,
    )  # fmt: skip
    try:
        server.wait_serving()
        with Client(server.address) as client:
            timed_robust(client, 10_000, 10)  # the trace, outside the timings
            rows: dict[int, list[tuple[float, float, int]]] = {0: [], 10: []}
            for pair in range(pairs):
                order = [0, 10] if pair % 2 == 0 else [10, 0]
                for every in order:
                    rows[every].append(timed_robust(client, pair, every))
                    print(f"  pair {pair}: preview_every={every:2d} {rows[every][-1][1]:.2f} s")
    finally:
        server.stop()
    without = statistics.median(t for _, t, _ in rows[0])
    with_previews = statistics.median(t for _, t, _ in rows[10])
    first = statistics.median(f for f, _, _ in rows[10])
    print(
        f"\nrobust, 4 filters, 100 steps, median of {pairs}:\n"
        f"  no previews          {without:6.2f} s\n"
        f"  preview_every=10     {with_previews:6.2f} s ({with_previews / without:.3f}x), "
        f"{rows[10][0][2]} previews, the first after {first:.2f} s\n"
        f"  first picture without previews: {statistics.median(f for f, _, _ in rows[0]):.2f} s"
    )


def preview_engine_share(weights: str, precision: str) -> None:
    """Row 7: the seconds of one preview's pictures against a step, the 4 rows of row 6."""
    import tensorflow as tf

    from filtercast_server.engine.ascent import AscentEngine
    from filtercast_server.engine.devices import select_device
    from filtercast_server.engine.models import LoadedModel
    from filtercast_server.engine.rows import Row
    from filtercast_server.planning import make_plan

    device = select_device("auto")
    models = {"vgg16": LoadedModel("vgg16", weights, device)}
    plan = make_plan(
        models, preset="robust", overrides={}, filters="0:4", precision=precision, seed=0
    )
    method = AscentEngine(models).method(plan.params, plan.precision)
    rows = [Row(job) for job in plan.jobs(list(range(4)))]
    every = tf.constant(list(range(4)), tf.int32)
    state = tuple(tf.constant(a) for a in method.initial(rows))
    steps, pictures = [], []
    for _ in range(14):  # the first two trace both functions: not timed
        started = time.perf_counter()
        state, losses = method.step(state, rows)
        losses.numpy()
        steps.append(time.perf_counter() - started)
        for row in rows:
            row.steps += 1
        started = time.perf_counter()
        method.pictures(tuple(tf.gather(t, every) for t in state))  # as the engine takes them
        pictures.append(time.perf_counter() - started)
    step, picture = statistics.median(steps[2:]), statistics.median(pictures[2:])
    print(
        f"\nin the engine ({plan.precision.value}), 4 rows: a step {step * 1e3:.1f} ms, "
        f"a preview's pictures {picture * 1e3:.1f} ms: "
        f"{picture / (10 * step):.2%} of the steps at preview_every=10"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--only", choices=["serving", "cache", "repeats", "previews"])
    parser.add_argument("--pairs", type=int, default=2, help="cold off/on pairs (cache)")
    parser.add_argument("--repeats", type=int, default=200, help="concurrent cached repeats")
    args = parser.parse_args()
    overrides = {"size": args.size, "steps": args.steps}
    weights = args.weights if Path(args.weights).is_file() else "random"
    print(
        f"weights: {weights}; classic vgg16/block5_conv1, {args.size} px, {args.steps} steps, "
        f"precision {args.precision}"
    )
    if args.only in (None, "serving"):
        serving_rows(weights, overrides, args.precision)
    if args.only in (None, "cache"):
        cache_rows(weights, overrides, args.precision, args.pairs)
    if args.only in (None, "repeats"):
        repeat_rows(weights, overrides, args.precision, args.repeats)
    if args.only in (None, "previews"):
        preview_rows(weights, args.precision, args.pairs)
        preview_engine_share(weights, args.precision)


if __name__ == "__main__":
    main()

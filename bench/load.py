"""Load test: N concurrent streaming clients for T seconds on mixed layers.

    .venv/bin/python bench/load.py [--server HOST:PORT --metrics HOST:PORT]
        --clients 8 --seconds 120 [--json PATH]

Loopback only, bounded in count and time: clients stop starting requests
after T seconds, every request has a deadline, and the tool stops by itself.
Without --server it starts its own server (real weights from ../shared when
present, else random). Some requests are cancelled after their first filter
on purpose. Prints, and writes as JSON, requests by status code, p50/p95/p99
time to first filter and request duration, filters/s, and server RSS after
warm-up and at the end.
"""

import argparse
import ipaddress
import json
import random
import re
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from filtercast_client.client import Client, FilterImage
from filtercast_client.local_server import LocalServer

WEIGHTS = Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
LAYERS = ["block5_conv1", "block4_conv3", "block3_conv3"]
MAX_REQUESTS_PER_CLIENT = 10_000


def require_loopback(address: str) -> None:
    """Refuse any target that is not this machine."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing {address}: load tests run against loopback addresses only")


def rss_bytes(metrics_address: str) -> float:
    """The server's resident memory, from its /metrics."""
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5).read().decode()
    return float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1))


class Recorder:
    """Thread-safe record of every request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[dict] = []

    def add(self, **row: object) -> None:
        """Record one request."""
        with self.lock:
            self.rows.append(row)


def client_loop(
    address: str, stop_at: float, seed: int, cancel_share: float, recorder: Recorder
) -> None:
    rng = random.Random(seed)
    with Client(address) as client:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= stop_at:
                return
            layer = rng.choice(LAYERS)
            count = rng.randint(2, 12)
            start = rng.randrange(0, 256 - count)
            cancel = rng.random() < cancel_share
            started = time.monotonic()
            first, filters, code = None, 0, "OK"
            stream = client.visualize(
                layer=layer,
                filters=f"{start}:{start + count}",
                overrides={"size": 64, "steps": 10},
                timeout=300,
            )
            try:
                for event in stream:
                    if isinstance(event, FilterImage):
                        filters += 1
                        if first is None:
                            first = time.monotonic() - started
                            if cancel:
                                stream.cancel()
                                code = "CANCELLED (deliberate)"
                                break
            except grpc.RpcError as error:
                code = error.code().name
            recorder.add(
                layer=layer,
                code=code,
                ttff=first,
                seconds=time.monotonic() - started,
                filters=filters,
            )


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="HOST:PORT on loopback (default: start one)")
    parser.add_argument("--metrics", help="HOST:PORT of its /metrics (for RSS)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument(
        "--warmup",
        type=float,
        default=20,
        help="seconds of load before the RSS 'after warm-up' sample",
    )
    parser.add_argument("--cancel-share", type=float, default=0.15)
    parser.add_argument("--json")
    args = parser.parse_args()

    own = None
    if args.server:
        require_loopback(args.server)
        address, metrics = args.server, args.metrics
    else:
        weights = str(WEIGHTS) if WEIGHTS.is_file() else "random"
        own = LocalServer(
            "--cache", "off", "--weights", weights, log_path=Path("/tmp/filtercast-load.log")
        )
        own.wait_serving()
        address, metrics = own.address, f"127.0.0.1:{own.metrics_port}"
    if metrics:
        require_loopback(metrics)

    # Warm-up, part 1: build every layer's extractor and compiled step once.
    with Client(address) as client:
        for layer in LAYERS:
            list(client.visualize(layer=layer, filters="0:2", overrides={"size": 64, "steps": 1}))
    samples: list[tuple[float, float]] = []
    recorder = Recorder()
    began = time.monotonic()
    stop_at = began + args.seconds
    threads = [
        threading.Thread(
            target=client_loop, args=(address, stop_at, k, args.cancel_share, recorder)
        )
        for k in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    # Part 2: the first --warmup seconds of load; RSS is sampled every 10 s.
    while any(thread.is_alive() for thread in threads):
        if metrics:
            samples.append((time.monotonic() - began, rss_bytes(metrics)))
        time.sleep(10)
    after_warmup = [rss for t, rss in samples if t >= args.warmup]
    rss_before = after_warmup[0] if after_warmup else None
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    rss_after = rss_bytes(metrics) if metrics else None
    if own:
        own.stop()

    rows = recorder.rows
    codes: dict[str, int] = {}
    for row in rows:
        codes[row["code"]] = codes.get(row["code"], 0) + 1
    completed = [r for r in rows if r["code"] == "OK"]
    report = {
        "clients": args.clients,
        "seconds": elapsed,
        "requests": len(rows),
        "by_code": codes,
        "time_to_first_filter_s": percentiles([r["ttff"] for r in rows if r["ttff"] is not None]),
        "request_duration_s": percentiles([r["seconds"] for r in completed]),
        "filters_per_second": sum(r["filters"] for r in rows) / elapsed,
        "rss_after_warmup_bytes": rss_before,
        "rss_end_bytes": rss_after,
        "rss_growth": (rss_after / rss_before - 1) if rss_before else None,
        "rss_samples_mb": [(round(t), round(rss / 2**20)) for t, rss in samples],
    }
    print(json.dumps(report, indent=2))
    unexpected = set(codes) - {"OK", "CANCELLED (deliberate)", "RESOURCE_EXHAUSTED"}
    if unexpected:
        print(f"UNEXPECTED failures: {sorted(unexpected)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

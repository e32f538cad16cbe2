"""Abuse run: legitimate clients beside a hostile mix, health probed throughout.

    .venv/bin/python bench/abuse.py [--clients 64] [--seconds 120] [--json PATH]

Starts its own server on loopback (real VGG16 weights from ../shared when
present, else random; default limits; bearer tokens: one per legitimate
client, one for the attacker; the HTTP gateway on; a result cache in a Redis
the tool starts, under a secret, or in a directory where redis-server is not
installed; 4,096 open files, set with prlimit, so that the descriptor budget
is within an attacker's reach), then runs four roles, each in its own
process so that no role's GIL distorts another's timings:

- health: grpc.health.v1 Check every 0.2 s on a kept channel and every 1 s on a
  fresh connection (as a kubelet probe), each with a 1 s deadline;
- legit: N clients in a loop, 1-4 filters of 32 or 64 px, 4 or 8 steps, seed
  0 or 1 (so that repeats come from the cache); a RESOURCE_EXHAUSTED must carry
  a retry hint, which the client then waits out; a picture that is the
  forger's (flat white) counts as served forged;
- probe: one small request (1 filter, 32 px, 2 steps) every 2 s: its time to
  first filter is the bound the run reports;
- hostile: huge filter ranges, the largest request the compute budget admits
  (512 px, 200 steps, 57 filters), never-read streams of 786 KB pictures
  (16 tries; the attacker may hold 8), undecodable bytes, calls without a
  token, 300 silent TCP connections and 200 half-sent /metrics requests,
  3,000 half-sent HTTP bodies (headers with a Content-Length, then one
  byte), each replaced as soon as the server closes it; and a forger with
  write access to the shared Redis that overwrites every cached entry it
  finds, in the previous layout (a good CRC) and in today's (a tag of its own).

The server's RSS is read from its /metrics every 5 s. Prints (and writes with
--json) a report: health latencies and failures, legitimate requests by
status (and whether every refusal carried a hint), the probe's time to first
filter, what the attacker got, and RSS after warm-up vs at the end.
"""

import argparse
import json
import random
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.client import Client, FilterImage, retry_after
from filtercast_client.health import check
from filtercast_client.local_server import LocalServer, free_port

WEIGHTS = Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
ATTACKER = "mallory"
METHOD = "/filtercast.v1.FilterVisualizerService/VisualizeFilters"
SERVING = health_pb2.HealthCheckResponse.SERVING
SERVER_OPEN_FILES = 4096
HALF_SENT_BODY = (
    b"POST /v1/visualize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
)


def token_of(name: str) -> str:
    return f"{name}-token-{'x' * 16}"


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    found = {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
    return {**found, "max": float(max(values))}


# --- roles (each runs in its own process) -------------------------------------------------


def role_health(address: str, until: float) -> dict:
    latencies, fresh_latencies, failures = [], [], []
    kept = grpc.insecure_channel(address)
    next_fresh = 0.0
    while time.monotonic() < until:
        for channel, record in ((kept, latencies), (None, fresh_latencies)):
            if channel is None:
                if time.monotonic() < next_fresh:
                    continue
                next_fresh = time.monotonic() + 1.0
            started = time.monotonic()
            try:
                if channel is None:
                    with grpc.insecure_channel(address) as fresh:
                        status = check(fresh, timeout=1.0)
                else:
                    status = check(channel, timeout=1.0)
                elapsed = time.monotonic() - started
                record.append(elapsed)
                if status != SERVING or elapsed > 1.0:
                    failures.append(f"status {status} after {elapsed:.2f}s")
            except grpc.RpcError as error:
                failures.append(f"{error.code().name} after {time.monotonic() - started:.2f}s")
        time.sleep(0.2)
    return {
        "checks": len(latencies) + len(fresh_latencies),
        "kept_channel_s": percentiles(latencies),
        "fresh_connection_s": percentiles(fresh_latencies),
        "failures": failures[:20],
        "failure_count": len(failures),
    }


def role_legit(address: str, until: float, clients: int) -> dict:
    rows: list[dict] = []
    details: list[str] = []
    served = {"pictures": 0, "cached": 0, "forged": 0}
    lock = threading.Lock()

    def loop(k: int) -> None:
        rng = random.Random(k)
        with Client(address, token=token_of(f"client{k}")) as client:
            while time.monotonic() < until:
                count = rng.randint(1, 4)
                start = rng.randrange(0, 64)
                started, first, code, hint = time.monotonic(), None, "OK", None
                try:
                    for event in client.visualize(
                        filters=f"{start}:{start + count}",
                        overrides={"size": rng.choice((32, 64)), "steps": rng.choice((4, 8))},
                        seed=rng.choice((0, 1)),
                        timeout=300,
                        grid=False,
                    ):
                        if isinstance(event, FilterImage) and first is None:
                            first = time.monotonic() - started
                        if isinstance(event, FilterImage):
                            with lock:
                                served["cached"] += event.cached
                                served["pictures"] += 1
                                forged = event.image is not None and bool(
                                    np.all(event.image == 255)
                                )
                                served["forged"] += forged
                except grpc.RpcError as error:
                    code, hint = error.code().name, retry_after(error)
                    detail = f"{code}: {error.details()} after {time.monotonic() - started:.1f}s"
                with lock:
                    rows.append({"code": code, "hint": hint, "ttff": first})
                    if code not in ("OK", "RESOURCE_EXHAUSTED"):
                        details.append(detail)
                if hint:
                    time.sleep(min(hint, 5.0))

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes: dict[str, int] = {}
    for row in rows:
        codes[row["code"]] = codes.get(row["code"], 0) + 1
    refused = [r for r in rows if r["code"] == "RESOURCE_EXHAUSTED"]
    return {
        "requests": len(rows),
        "by_code": codes,
        "refusals_with_retry_hint": sum(1 for r in refused if r["hint"]),
        "unexpected": sorted(set(codes) - {"OK", "RESOURCE_EXHAUSTED"}),
        "unexpected_details": details[:10],
        "time_to_first_filter_s": percentiles([r["ttff"] for r in rows if r["ttff"] is not None]),
        "pictures": served["pictures"],
        "pictures_from_the_cache": served["cached"],
        "forged_pictures_served": served["forged"],
    }


def role_probe(address: str, until: float) -> dict:
    ttffs, codes, details = [], {}, []
    with Client(address, token=token_of("probe")) as client:
        while time.monotonic() < until:
            started, code = time.monotonic(), "OK"
            try:
                for event in client.visualize(
                    filters="7:8", overrides={"size": 32, "steps": 2}, grid=False, timeout=300
                ):
                    if isinstance(event, FilterImage):
                        ttffs.append(time.monotonic() - started)
            except grpc.RpcError as error:
                code = error.code().name
                if code != "RESOURCE_EXHAUSTED":
                    details.append(
                        f"{code}: {error.details()} after {time.monotonic() - started:.1f}s"
                    )
            codes[code] = codes.get(code, 0) + 1
            time.sleep(max(0.0, started + 2.0 - time.monotonic()))
    return {
        "requests": sum(codes.values()),
        "by_code": codes,
        "unexpected_details": details[:10],
        "ttff_s": percentiles(ttffs),
    }


def role_hostile(
    address: str, metrics_port: int, http_port: int, redis_url: str, until: float
) -> dict:
    host, port = address.rsplit(":", 1)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets
    tally: dict[str, dict[str, int]] = {}
    lock = threading.Lock()

    def count(kind: str, code: str) -> None:
        with lock:
            tally.setdefault(kind, {})
            tally[kind][code] = tally[kind].get(code, 0) + 1

    metadata = (("authorization", f"Bearer {token_of(ATTACKER)}"),)

    def raw_call(channel: grpc.Channel, payload: bytes, with_token: bool = True) -> str:
        call = channel.unary_stream(METHOD, request_serializer=None, response_deserializer=None)
        try:
            for _ in call(payload, timeout=10, metadata=metadata if with_token else None):
                pass
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    def huge_ranges() -> None:
        payload = pb.VisualizeFiltersRequest(
            filters=pb.FilterSelection(range=pb.FilterRange(start=0, stop=2**31 - 1))
        ).SerializeToString()
        with grpc.insecure_channel(address) as channel:
            while time.monotonic() < until:
                count("huge range", raw_call(channel, payload))
                time.sleep(0.1)

    def garbage() -> None:
        with grpc.insecure_channel(address) as channel:
            while time.monotonic() < until:
                count("malformed bytes", raw_call(channel, b"\xff\xfe garbage \x00" * 8))
                count("no token", raw_call(channel, b"", with_token=False))
                time.sleep(0.05)

    def largest() -> None:
        with Client(address, token=token_of(ATTACKER), attempts=1) as client:
            while time.monotonic() < until:
                try:
                    list(
                        client.visualize(
                            filters="0:57",
                            overrides={"size": 512, "steps": 200},
                            grid=False,
                            timeout=max(1.0, until - time.monotonic()),
                        )
                    )
                    count("largest admitted request", "OK")
                except grpc.RpcError as error:
                    count("largest admitted request", error.code().name)
                    time.sleep(1)

    def never_read() -> None:
        with Client(address, token=token_of(ATTACKER), attempts=1) as client:
            while time.monotonic() < until:
                stream = client.visualize(
                    layer="block1_conv1",
                    filters="0:64",
                    overrides={"size": 512, "steps": 1},
                    image_format="raw",
                    grid=False,
                )
                events = iter(stream)  # held: dropping the iterator would cancel the stream
                try:
                    next(events)  # Accepted; then never read again
                    count("never-read stream", "opened")
                    time.sleep(max(0.0, until - time.monotonic()))
                except grpc.RpcError as error:
                    count("never-read stream", error.code().name)
                    time.sleep(2)
                finally:
                    stream.cancel()

    def silent(target_port: int, kind: str, hello: bytes, how_many: int) -> None:
        sockets: list[socket.socket] = []
        while time.monotonic() < until:
            alive = []
            for sock in sockets:  # replace what the server closed
                sock.setblocking(False)
                try:
                    if sock.recv(65536) == b"":
                        count(kind, "closed by server")
                        sock.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    count(kind, "closed by server")
                    sock.close()
                    continue
                alive.append(sock)
            sockets = alive
            while len(sockets) < how_many:
                try:
                    sock = socket.create_connection((host, target_port), timeout=5)
                    sock.sendall(hello)
                    sockets.append(sock)
                    count(kind, "opened")
                except OSError:
                    count(kind, "refused")
                    break
            time.sleep(1)
        for sock in sockets:
            sock.close()

    def forger() -> None:
        """Overwrite every cached entry in the shared Redis with a flat white picture."""
        import redis

        from filtercast_server.cache.entry import EntryCodec
        from filtercast_server.jobs import FilterOutcome
        from filtercast_server.png import png_bytes

        store = redis.Redis.from_url(redis_url)
        own = EntryCodec(b"mallory's own secret, not the servers'")
        white = np.full((32, 32, 3), 255, np.uint8)
        body = png_bytes(white)
        while time.monotonic() < until:
            for n, name in enumerate(store.scan_iter(match="filtercast:result:*", count=1000)):
                key = name.decode().rsplit(":", 1)[1]
                if n % 2:
                    header = {"index": 0, "loss": 99.0, "dead": False, "steps": 4}
                    text = json.dumps(
                        {**header, "seconds": 0.1, "revived": 0, "crc32": zlib.crc32(body)}
                        | {"length": len(body)}
                    ).encode()
                    blob = b"FCR1" + len(text).to_bytes(4, "little") + text + body
                    count("forged entry", "old layout written")
                else:
                    blob = own.pack(key, FilterOutcome(0, 99.0, False, white, 4, 0.1))
                    count("forged entry", "new layout written")
                store.set(name, blob)
            time.sleep(0.5)

    jobs = [
        threading.Thread(target=huge_ranges),
        threading.Thread(target=garbage),
        threading.Thread(target=largest),
        *(threading.Thread(target=never_read) for _ in range(16)),
        threading.Thread(target=silent, args=(int(port), "silent gRPC connection", b"", 300)),
        threading.Thread(
            target=silent,
            args=(metrics_port, "half-sent /metrics request", b"GET /metrics HTTP/1.1\r\n", 200),
        ),
        threading.Thread(
            target=silent, args=(http_port, "half-sent HTTP body", HALF_SENT_BODY, 3000)
        ),
        *([threading.Thread(target=forger)] if redis_url else []),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    return tally


# --- the run ------------------------------------------------------------------------------


def rss_bytes(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1))


def cache_faults(metrics_port: int) -> dict[str, float]:
    """filtercast_cache_errors_total by operation, and the hits."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^filtercast_cache_errors_total\{operation="(\w+)"\} (\S+)$', text, re.M
        )
    }
    hits = re.search(r"^filtercast_cache_hits_total (\S+)$", text, re.M)
    return {**found, "hits": float(hits.group(1)) if hits else 0.0}


def start_redis(work: Path) -> tuple[subprocess.Popen | None, str]:
    """A redis-server of its own, bounded and LRU, and its URL; else a directory cache."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not installed: the cache is a directory and the forger sits out")
        return None, str(work / "cache")
    port = free_port()
    bounds = ("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(work),
            *bounds,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=30, help="RSS settles by then")
    parser.add_argument("--json")
    parser.add_argument("--log-level", default="INFO", help="the server's")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", default="", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:  # a child process: run one role until the shared deadline
        until = time.monotonic() + (args.until - time.time())
        result = {
            "health": lambda: role_health(args.address, until),
            "legit": lambda: role_legit(args.address, until, args.clients),
            "probe": lambda: role_probe(args.address, until),
            "hostile": lambda: role_hostile(
                args.address, args.metrics_port, args.http_port, args.redis, until
            ),
        }[args.role]()
        Path(args.out).write_text(json.dumps(result))
        return

    work = Path("/tmp/filtercast-abuse")
    work.mkdir(exist_ok=True)
    tokens = work / "tokens"
    names = [f"client{k}" for k in range(args.clients)] + ["probe", ATTACKER]
    tokens.write_text("".join(f"{name} {token_of(name)}\n" for name in names))
    weights = str(WEIGHTS) if WEIGHTS.is_file() else "random"
    secret = work / "cache.secret"
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    redis_server, cache = start_redis(work)
    server = LocalServer(
        "--cache",
        cache,
        "--cache-secret-file",
        str(secret),
        "--weights",
        weights,
        "--auth-tokens-file",
        str(tokens),
        "--log-level",
        args.log_level,
        log_path=work / "server.log",
        env={"MALLOC_ARENA_MAX": "2"},  # as the container image sets it
        http_port=0,
    )
    resource.prlimit(
        server.process.pid, resource.RLIMIT_NOFILE, (SERVER_OPEN_FILES, SERVER_OPEN_FILES)
    )
    server.wait_serving()
    with Client(server.address, token=token_of("probe")) as client:  # trace the common steps
        for size in (32, 64):
            for steps in (2, 4, 8):
                list(client.visualize(filters=[0], overrides={"size": size, "steps": steps}))
    until = time.time() + args.seconds
    children = {
        role: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                role,
                "--address",
                server.address,
                "--metrics-port",
                str(server.metrics_port),
                "--http-port",
                str(server.http_port),
                "--redis",
                cache if redis_server else "",
                "--until",
                str(until),
                "--clients",
                str(args.clients),
                "--out",
                str(work / f"{role}.json"),
            ]
        )
        for role in ("health", "probe", "legit", "hostile")
    }
    began = time.monotonic()
    samples: list[tuple[float, float]] = []
    while any(child.poll() is None for child in children.values()):
        samples.append((time.monotonic() - began, rss_bytes(server.metrics_port)))
        time.sleep(5)
    alive = server.process.poll() is None
    rss_end = rss_bytes(server.metrics_port) if alive else None
    faults = cache_faults(server.metrics_port) if alive else {}
    code = server.stop()
    if redis_server is not None:
        redis_server.terminate()
    log_levels: dict[str, int] = {}
    for line in (work / "server.log").read_text().splitlines():
        level = json.loads(line).get("levelname", "?") if line.startswith("{") else "raw"
        log_levels[level] = log_levels.get(level, 0) + 1
    settled = [rss for t, rss in samples if t >= args.warmup]
    report = {
        "seconds": args.seconds,
        "legit_clients": args.clients,
        "weights": Path(weights).name,
        "server_alive_at_end": alive,
        "server_exit_code": code,
        "server_log_lines": log_levels,
        "cache": cache.split("?")[0] if redis_server else "directory",
        "cache_faults": faults,
        **{role: json.loads((work / f"{role}.json").read_text()) for role in children},
        "rss_mib_after_warmup": settled[0] / 2**20 if settled else None,
        "rss_mib_end": rss_end / 2**20 if rss_end else None,
        "rss_growth": (rss_end / settled[0] - 1) if settled and rss_end else None,
        "rss_samples_mib": [(round(t), round(rss / 2**20)) for t, rss in samples],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

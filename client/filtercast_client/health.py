"""Ask a server's grpc.health.v1 service; exit 0 when it is SERVING.

    python -m filtercast_client.health [--address HOST:PORT] [--service NAME]

The container's HEALTHCHECK runs this. The default address is this host's
plaintext health port, $FILTERCAST_HEALTH_PORT (the server's health-only port,
there when the main port uses TLS), else $FILTERCAST_PORT, else 50051.
"""

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(channel: grpc.Channel, service: str = "", timeout: float = 5.0) -> int:
    """The health status of `service` ("" = the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status)


def main(argv: list[str] | None = None) -> int:
    """Print the status; 0 if SERVING, 1 otherwise (or when unreachable)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    port = (
        int(os.environ.get("FILTERCAST_HEALTH_PORT") or 0)
        or int(os.environ.get("FILTERCAST_PORT") or 0)
        or 50051
    )
    parser.add_argument("--address", default=f"127.0.0.1:{port}")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        try:
            status = check(channel, args.service, args.timeout)
        except grpc.RpcError as error:
            print(f"{args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"{args.address}: {name}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())

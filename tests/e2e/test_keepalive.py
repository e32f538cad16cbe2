"""A stream that carries no data for a long while (a request waiting for its first
picture) survives the client's keepalive pings: the server's ping policy is in force."""

import subprocess
import sys
import time

import grpc

from filtercast.contract import SERVER_MIN_PING_INTERVAL_MS as MIN_CLIENT_PING_MS
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.local_server import free_port

# A server with the real channel options whose stream sends Accepted, then nothing.
SERVER = """
import asyncio, sys, grpc
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.config import Settings
from filtercast_server.serving.listeners import server_options

async def quiet(request, context):
    await context.write(pb.VisualizeFiltersResponse(accepted=pb.Accepted(request_id="q")))
    await asyncio.sleep(3600)

async def main():
    server = grpc.aio.server(options=server_options(Settings(), 100))
    handler = grpc.unary_stream_rpc_method_handler(
        quiet, response_serializer=pb.VisualizeFiltersResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "filtercast.v1.FilterVisualizerService", {"VisualizeFilters": handler}),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    print("up", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""
QUIET_SECONDS = 3.5 * MIN_CLIENT_PING_MS / 1000  # three pings without data, and then some


def test_a_quiet_stream_survives_keepalive_pings() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout.readline().strip() == "up"
        options = [  # a client pinging as often as the server allows, and without data
            ("grpc.keepalive_time_ms", MIN_CLIENT_PING_MS),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options) as channel:
            call = channel.unary_stream(
                "/filtercast.v1.FilterVisualizerService/VisualizeFilters",
                request_serializer=pb.VisualizeFiltersRequest.SerializeToString,
                response_deserializer=pb.VisualizeFiltersResponse.FromString,
            )(pb.VisualizeFiltersRequest(), timeout=QUIET_SECONDS)
            started = time.monotonic()
            try:
                for _ in call:
                    pass
            except grpc.RpcError as error:
                # Before the fix: UNAVAILABLE "Too many pings" after the second ping.
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
            assert time.monotonic() - started >= QUIET_SECONDS - 1
    finally:
        server.kill()
        server.wait(10)

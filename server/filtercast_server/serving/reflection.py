"""Server reflection under both of its names: grpc.reflection.v1 and v1alpha.

grpcio-reflection implements only v1alpha, which older tools (grpcurl) use;
newer ones (buf curl, Postman) ask for v1. The two protocols are the same
messages under another package name (field for field), so one servicer
answers both, decoding and encoding with the v1alpha message classes.
"""

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as messages

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = reflection.SERVICE_NAME


def enable_reflection(server: grpc.aio.Server, services: Iterable[str]) -> None:
    """Serve reflection for `services` (and itself, under both names) on `server`."""
    names = (*services, V1, V1ALPHA)
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=messages.ServerReflectionRequest.FromString,
        response_serializer=messages.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method})
            for name in (V1, V1ALPHA)
        )
    )

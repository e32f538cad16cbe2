"""Rich gRPC errors: a google.rpc.Status with typed details, as every gRPC client reads them.

The details travel in the `grpc-status-details-bin` trailer, so a Node.js or
Go client gets the same facts as the Python one: which request field was
wrong (BadRequest), which resource was missing (ResourceInfo), which quota
was hit (QuotaFailure) and when to retry (RetryInfo).
"""

from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
MAX_NAME = 200  # a client-supplied name echoed in a detail is cut here (trailers are bounded)


@dataclass(frozen=True)
class ErrorFacts:
    """What a refusal can say beyond its message; each fact becomes one detail."""

    field: str | None = None  # request field path, e.g. "overrides.size"
    resource: tuple[str, str] | None = None  # (type, name), e.g. ("model", "vgg99")
    quota: str | None = None  # subject of the exhausted quota, e.g. "client:alice"
    retry_after: float | None = None  # seconds


def status_trailers(code: grpc.StatusCode, message: str, facts: ErrorFacts) -> tuple:
    """Trailing metadata holding a google.rpc.Status with the facts as details."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if facts.field is not None:
        request = error_details_pb2.BadRequest()
        request.field_violations.add(field=facts.field, description=message)
        status.details.add().Pack(request)
    if facts.resource is not None:
        kind, name = facts.resource
        info = error_details_pb2.ResourceInfo(resource_type=kind, resource_name=name[:MAX_NAME])
        status.details.add().Pack(info)
    if facts.quota is not None:
        failure = error_details_pb2.QuotaFailure()
        failure.violations.add(subject=facts.quota, description=message)
        status.details.add().Pack(failure)
    if facts.retry_after is not None:
        seconds = facts.retry_after
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if not status.details:
        return ()
    return ((DETAILS_KEY, status.SerializeToString()),)


async def refuse(
    context: Any,
    code: grpc.StatusCode,
    message: str,
    facts: ErrorFacts = ErrorFacts(),
) -> NoReturn:
    """End the call with `code`, `message` (with its retry hint) and the facts as details."""
    if facts.retry_after is not None:
        message = f"{message} [retry in ~{facts.retry_after:.0f} s]"
    await context.abort(code, message, status_trailers(code, message, facts))
    raise AssertionError("context.abort returned")  # it raises; this keeps NoReturn honest

"""The errors of the client library: one hierarchy, each carrying the server's facts.

    try:
        ...
    except InvalidRequest as error:
        print(error.field, error.message)     # e.g. "overrides.size", "size=4 is out of range..."
    except Overloaded as error:
        time.sleep(error.retry_after or 1)
    except FiltercastError as error:          # anything else the service said
        print(error.status.name, error.message)

Every class derives from FiltercastError, itself a grpc.RpcError, so code
written against raw gRPC errors (``error.code()``, ``error.details()``) keeps
working. The facts come from the google.rpc.Status details the server sends
(BadRequest, ResourceInfo, QuotaFailure, RetryInfo).
"""

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class FiltercastError(grpc.RpcError):
    """A call failed; `status`, `message` and the structured facts say why."""

    def __init__(
        self,
        status: grpc.StatusCode,
        message: str,
        *,
        field: str | None = None,
        resource: tuple[str, str] | None = None,
        quota: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message
        self.field = field  # the request field at fault (BadRequest), e.g. "overrides.size"
        self.resource = resource  # (type, name) that was not found (ResourceInfo)
        self.quota = quota  # the quota that was exhausted (QuotaFailure)
        self.retry_after = retry_after  # seconds the server suggests waiting (RetryInfo)

    def code(self) -> grpc.StatusCode:
        """The gRPC status code, as grpc.RpcError has it."""
        return self.status

    def details(self) -> str:
        """The server's message, as grpc.RpcError has it."""
        return self.message


class InvalidRequest(FiltercastError):  # noqa: N818 -- the hierarchy reads as outcomes
    """The request is wrong (INVALID_ARGUMENT): `field` names what to change."""


class NotFound(FiltercastError):  # noqa: N818
    """The model asked for is not served (NOT_FOUND): `resource` names it."""


class Unavailable(FiltercastError):  # noqa: N818
    """No server could take the call (UNAVAILABLE): unreachable, starting or draining."""


class Overloaded(FiltercastError):  # noqa: N818
    """The server is at a limit (RESOURCE_EXHAUSTED): retry after `retry_after` seconds."""


class Cancelled(FiltercastError):  # noqa: N818
    """The call was cancelled (CANCELLED)."""


class DeadlineExceeded(FiltercastError):  # noqa: N818
    """The call's deadline passed, or the server ended a stream that ran too long."""


class Unauthenticated(FiltercastError):  # noqa: N818
    """No valid credentials (UNAUTHENTICATED) or not allowed (PERMISSION_DENIED)."""


class ServerError(FiltercastError):
    """The server failed (INTERNAL, UNKNOWN or another code): not the request's fault."""


class ProtocolError(FiltercastError):
    """The server's stream broke the contract (an event out of order, unknown or malformed)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INTERNAL, message)


CLASSES: dict[grpc.StatusCode, type[FiltercastError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
}


def _details(error: grpc.RpcError) -> list[Any]:
    """The google.rpc.Status details of a failed call (none when it carries no status)."""
    # Sync errors are grpc.Call; asyncio ones (AioRpcError) only look like one.
    if not hasattr(error, "trailing_metadata"):
        return []
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # a status that contradicts the call's code: ignore its details
        return []
    return list(status.details) if status else []


def from_rpc_error(error: grpc.RpcError) -> FiltercastError:
    """The typed error of a failed gRPC call (a FiltercastError is returned as is)."""
    if isinstance(error, FiltercastError):
        return error
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    facts: dict[str, Any] = {}
    for detail in _details(error):
        request = error_details_pb2.BadRequest()
        resource = error_details_pb2.ResourceInfo()
        quota = error_details_pb2.QuotaFailure()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(request) and request.field_violations:
            facts["field"] = request.field_violations[0].field
        elif detail.Unpack(resource):
            facts["resource"] = (resource.resource_type, resource.resource_name)
        elif detail.Unpack(quota) and quota.violations:
            facts["quota"] = quota.violations[0].subject
        elif detail.Unpack(retry):
            facts["retry_after"] = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return CLASSES.get(code, ServerError)(code, message, **facts)


def retry_after(error: grpc.RpcError) -> float | None:
    """The server's retry hint (google.rpc.RetryInfo) on a refused call, in seconds."""
    return from_rpc_error(error).retry_after

"""Errors the engine raises for a request it cannot serve.

The gRPC layer maps each to a status code; the local CLI prints the message.
Every message says what to change.
"""


class InvalidRequestError(ValueError):
    """A request parameter is out of range or unknown (gRPC INVALID_ARGUMENT).

    `field` names the parameter (an AscentParams name or a request field such
    as "filters"); the API turns it into a google.rpc.BadRequest field violation.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(InvalidRequestError):
    """A named resource is not here (gRPC NOT_FOUND, with a google.rpc.ResourceInfo)."""

    def __init__(self, message: str, kind: str, name: str) -> None:
        super().__init__(message, kind)
        self.kind = kind  # the ResourceInfo's type and the request field that named it
        self.name = name


class UnknownModelError(NotFoundError):
    """The requested model is not served."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message, "model", model)


class UnknownDatasetError(NotFoundError):
    """The model has no dataset of that name."""

    def __init__(self, message: str, dataset: str) -> None:
        super().__init__(message, "dataset", dataset)


class ModelLoadError(RuntimeError):
    """A model or its weights could not be loaded."""


class RefusedError(Exception):
    """The server cannot take the request now (gRPC RESOURCE_EXHAUSTED): retry later.

    `reason` labels the refusal in metrics; `retry_after` is the server's
    estimate, in seconds, of when a retry may succeed.
    """

    def __init__(self, reason: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


def quoted(value: str, limit: int = 80) -> str:
    """repr() of a client-supplied string, shortened: errors echo it back in gRPC trailers."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"... ({len(value)} characters)"

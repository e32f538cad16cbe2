"""Bearer-token authentication: who is calling, checked in constant time.

Tokens come from a file the operator keeps secret (a Kubernetes Secret, a
file readable only by the service), one per line::

    # name    token                              role (optional)
    alice     6f1c0b3e9d5a4c2f8e7b1a0d3c5e9f72
    dashboard 0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a   read

`visualize` (the default) may call everything; `read` may list and describe
models but not run the network on anything (VisualizeFilters, AnalyzeImage,
DatasetExamples).
The name identifies the caller in logs and in per-client limits; the token
itself is never logged or echoed. Only the SHA-256 of each token is kept in
memory.
"""

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

ROLES = ("visualize", "read")
MIN_TOKEN_LENGTH = 16
# The `visualize` role's alone.
COMPUTE_METHODS = ("VisualizeFilters", "AnalyzeImage", "DatasetExamples")


class AuthConfigError(ValueError):
    """The tokens file is missing or malformed (the server refuses to start)."""


class AuthError(Exception):
    """A call is refused: `permission` False means UNAUTHENTICATED, True PERMISSION_DENIED."""

    def __init__(self, message: str, permission: bool = False) -> None:
        super().__init__(message)
        self.permission = permission

    @property
    def code(self) -> grpc.StatusCode:
        """The status the call ends with (the HTTP gateway maps it to 401 or 403)."""
        return (
            grpc.StatusCode.PERMISSION_DENIED
            if self.permission
            else grpc.StatusCode.UNAUTHENTICATED
        )

    @property
    def reason(self) -> str:
        """Its label in filtercast_rejected_total."""
        return "permission_denied" if self.permission else "unauthenticated"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    name: str
    role: str = "visualize"

    def may_call(self, method: str) -> bool:
        """Whether this caller's role allows `method` (a bare method name)."""
        return self.role == "visualize" or method not in COMPUTE_METHODS


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuthenticator:
    """Checks `authorization: Bearer <token>` metadata against the configured tokens."""

    def __init__(self, tokens: dict[str, Identity]) -> None:
        if not tokens:
            raise AuthConfigError("no tokens configured")
        self._entries = [(_digest(token), identity) for token, identity in tokens.items()]

    @classmethod
    def from_file(cls, path: Path) -> "TokenAuthenticator":
        """Read a tokens file (format in the module docstring)."""
        try:
            text = path.read_text()
        except OSError as error:
            raise AuthConfigError(f"cannot read the tokens file {path}: {error}") from error
        tokens: dict[str, Identity] = {}
        names: set[str] = set()
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{path.name} line {number}"
            if len(fields) not in (2, 3):
                raise AuthConfigError(f"{where}: expected 'NAME TOKEN [ROLE]'")
            name, token, role = fields[0], fields[1], fields[2] if len(fields) == 3 else ROLES[0]
            if role not in ROLES:
                raise AuthConfigError(f"{where}: role must be one of {', '.join(ROLES)}")
            if len(token) < MIN_TOKEN_LENGTH:
                raise AuthConfigError(
                    f"{where}: tokens need at least {MIN_TOKEN_LENGTH} characters "
                    "(e.g. python -c 'import secrets; print(secrets.token_hex(16))')"
                )
            if name in names or token in tokens:
                raise AuthConfigError(f"{where}: the name or token is listed twice")
            names.add(name)
            tokens[token] = Identity(name, role)
        return cls(tokens)

    def authorize(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, method: str
    ) -> Identity:
        """The caller named by the call's token, if its role may call `method`; else AuthError.

        The one decision for every port: gRPC (the interceptor) and HTTP (the gateway).
        """
        identity = self.identify(metadata)
        if not identity.may_call(method):
            raise AuthError(
                f"this token's role ({identity.role}) may not call {method}", permission=True
            )
        return identity

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Identity:
        """The caller named by the call's bearer token, or AuthError."""
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(
                "this server needs a bearer token: send the metadata 'authorization: Bearer TOKEN'"
            )
        presented = _digest(token.strip())
        found = None
        for digest, identity in self._entries:  # every entry, no early exit: constant time
            if hmac.compare_digest(digest, presented):
                found = identity
        if found is None:
            raise AuthError("the bearer token was not accepted")
        return found

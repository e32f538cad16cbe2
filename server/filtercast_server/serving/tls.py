"""Server TLS (and mTLS) credentials that pick up renewed certificate files.

gRPC asks the fetcher below before each new handshake; it re-reads the files
only when one of them changed (a cert-manager renewal, a rotated Secret), so
connections made after a renewal use the new certificate without a restart.
A half-written or broken set of files is logged and the previous one kept.
"""

import logging
import ssl
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TLSConfigError(ValueError):
    """The TLS files are missing or unreadable (the server refuses to start)."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TLSConfigError(f"cannot read {path}: {error}") from error


class ReloadingCredentials:
    """TLS credentials from PEM files; `client_ca` set means clients must present a cert."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.paths = [p for p in (cert, key, client_ca) if p is not None]
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp = self._mtimes()
        self._initial = self._configuration()

    def _mtimes(self) -> tuple:
        def stamp(path: Path) -> int | None:
            try:
                return path.stat().st_mtime_ns
            except OSError:  # mid-rotation: gone for a moment
                return None

        return tuple(stamp(p) for p in self.paths)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        key, cert = _read(self.key), _read(self.cert)
        try:  # a key that does not match its certificate fails here, not in every handshake
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as error:
            raise TLSConfigError(
                f"{self.cert} and {self.key} are not a valid pair: {error}"
            ) from error
        roots = _read(self.client_ca) if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed since the last look, else None."""
        stamp = self._mtimes()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            configuration = self._configuration()
        except TLSConfigError as error:
            log.error("kept the previous TLS certificate: %s", error)
            return None
        log.info("TLS certificate files changed; new connections use them")
        return configuration

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials for add_secure_port."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,  # type: ignore[arg-type]  # None means "unchanged" to grpc; not its stubs
            require_client_authentication=self.client_ca is not None,
        )


def http_tls_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """The gRPC port's certificate (and client CA for mTLS) for the HTTP gateway.

    Read once, at start: unlike the gRPC port's, a renewal needs a restart.
    TLSConfigError naming what could not be read.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as error:
        raise TLSConfigError(f"the HTTP gateway's TLS files: {error}") from error
    return context

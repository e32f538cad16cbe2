"""TLS, mTLS and certificate reload against a real server, certificates made in the test."""

import datetime
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2

from filtercast_client.client import TLS, Client, Summary
from filtercast_client.health import check
from filtercast_client.local_server import free_port
from tests.support.processes import ServerProcess

TOKEN = "tls-test-token-0123456789"
SERVING = health_pb2.HealthCheckResponse.SERVING


class Authority:
    """A throwaway certificate authority."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @staticmethod
    def _builder(subject, issuer, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, name: str, client: bool = False) -> tuple[bytes, bytes]:
        """(key PEM, certificate PEM) for a server on localhost / 127.0.0.1, or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = self._builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if not client:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """TLS on the main port, bearer tokens, plaintext health on its own port."""
    directory = tmp_path_factory.mktemp("tls")
    authority = Authority("test CA")
    key, cert = authority.issue("filtercast")
    (directory / "tokens").write_text(f"tester {TOKEN}\n")
    health_port = free_port()
    server = ServerProcess(
        *("--tls-cert", str(write(directory, "tls.crt", cert))),
        *("--tls-key", str(write(directory, "tls.key", key))),
        *("--auth-tokens-file", str(directory / "tokens")),
        *("--health-port", str(health_port), "--precision", "float32"),
        log_dir=directory,
    )
    server.health_port = health_port
    server.directory = directory
    server.authority = authority
    server.channel = grpc.insecure_channel(f"127.0.0.1:{health_port}")  # wait_serving asks here
    yield server.wait_serving()
    assert server.stop() == 0


def test_a_tls_client_with_a_token_is_served(tls_server) -> None:
    tls = TLS(ca=tls_server.authority.pem)
    with Client(tls_server.address, tls=tls, token=TOKEN) as client:
        assert client.list_models()[0].name == "vgg16"
        events = list(client.visualize(filters=[0], overrides={"size": 32, "steps": 1}))
        assert isinstance(events[-1], Summary)
    with Client(
        tls_server.address,
        tls=TLS(ca=tls_server.authority.pem, server_name="localhost"),
        token=TOKEN,
    ) as client:  # the certificate's DNS name, checked instead of the IP
        assert client.list_models()


def test_plaintext_and_untrusted_clients_are_refused(tls_server) -> None:
    with (
        Client(tls_server.address, token=TOKEN, attempts=1) as plain,
        pytest.raises(grpc.RpcError) as info,
    ):
        plain.list_models(timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = Authority("another CA")
    untrusted = Client(tls_server.address, tls=TLS(ca=stranger.pem), token=TOKEN, attempts=1)
    with untrusted, pytest.raises(grpc.RpcError) as info:
        untrusted.list_models(timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_health_port_answers_in_plaintext(tls_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_server.health_port}") as channel:
        assert check(channel) == SERVING
    probe = subprocess.run(
        [sys.executable, "-m", "filtercast_client.health"],
        env={"FILTERCAST_HEALTH_PORT": str(tls_server.health_port), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0 and "SERVING" in probe.stdout, probe.stderr


def test_the_cli_speaks_tls_with_a_token(tls_server) -> None:
    ca = write(tls_server.directory, "ca.pem", tls_server.authority.pem)
    token = write(tls_server.directory, "token", TOKEN.encode())
    command = [Path(sys.executable).with_name("filtercast"), "models"]
    common = ["--server", tls_server.address, "--tls-ca", str(ca)]
    result = subprocess.run(
        [*command, *common, "--token-file", str(token)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "vgg16" in result.stdout, result.stderr
    result = subprocess.run([*command, *common], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr


def test_renewed_certificate_files_are_used_without_a_restart(tls_server) -> None:
    renewed = Authority("renewed CA")
    key, cert = renewed.issue("filtercast")
    time.sleep(0.01)  # a distinct modification time
    write(tls_server.directory, "tls.key", key)
    write(tls_server.directory, "tls.crt", cert)
    with Client(tls_server.address, tls=TLS(ca=renewed.pem), token=TOKEN) as client:
        assert client.list_models()
    with (
        Client(
            tls_server.address, tls=TLS(ca=tls_server.authority.pem), token=TOKEN, attempts=1
        ) as old,
        pytest.raises(grpc.RpcError),
    ):
        old.list_models(timeout=10)


def test_mtls_needs_a_client_certificate(tmp_path) -> None:
    servers, clients = Authority("server CA"), Authority("client CA")
    key, cert = servers.issue("filtercast")
    server = ServerProcess(
        *("--tls-cert", str(write(tmp_path, "tls.crt", cert))),
        *("--tls-key", str(write(tmp_path, "tls.key", key))),
        *("--tls-client-ca", str(write(tmp_path, "clients.pem", clients.pem))),
        *("--health-port", str(health_port := free_port())),
        log_dir=tmp_path,
    )
    server.channel = grpc.insecure_channel(f"127.0.0.1:{health_port}")
    try:
        server.wait_serving()
        with Client(server.address, tls=TLS(ca=servers.pem), attempts=1) as anonymous:
            with pytest.raises(grpc.RpcError) as info:
                anonymous.list_models(timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        client_key, client_cert = clients.issue("a client", client=True)
        tls = TLS(ca=servers.pem, cert=client_cert, key=client_key)
        with Client(server.address, tls=tls) as known:
            assert known.list_models()[0].name == "vgg16"
    finally:
        assert server.stop() == 0

"""Shared test settings: hypothesis profiles sized for a 2-core machine, and the fixtures
of every tier: real weights, a real server per module, a real redis-server."""

import os
import shutil
import subprocess

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
# make test-fast: the quick loop while editing; make test runs the default.
settings.register_profile("fast", parent=settings.get_profile("default"), max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED = Path(
    os.environ.get("FILTERCAST_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")
)
VGG16_WEIGHTS = SHARED / "models" / "vgg16_imagenet_notop.weights.h5"


@pytest.fixture(scope="session", autouse=True)
def private_cache_home(tmp_path_factory) -> None:
    """Servers the tests start with the default cache write under a temporary
    $XDG_CACHE_HOME, never into the home directory (subprocesses inherit it)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="session")
def vgg16_weights() -> Path:
    """The real ImageNet VGG16 weights from ../shared, or a skip saying why."""
    if not VGG16_WEIGHTS.is_file():
        pytest.skip(f"real VGG16 weights not found at {VGG16_WEIGHTS} (set FILTERCAST_SHARED_DIR)")
    return VGG16_WEIGHTS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on 127.0.0.1 (random weights, float32, batches of 8), one per module."""
    from tests.support.processes import ServerProcess

    process = ServerProcess(
        "--max-batch", "8", "--precision", "float32", log_dir=tmp_path_factory.mktemp("logs")
    ).wait_serving()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, one per module."""
    import redis

    from filtercast_client.local_server import free_port
    from tests.support.processes import wait_until

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(up, "redis-server answers", timeout=30)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    """A real server (random weights, float32) with its HTTP gateway, one per module."""
    from tests.support.processes import ServerProcess

    folder = tmp_path_factory.mktemp("web")
    process = ServerProcess("--precision", "float32", log_dir=folder, http=True).wait_serving()
    yield process
    assert process.stop() == 0

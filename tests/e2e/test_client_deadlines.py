"""Clients never hang past their deadline: sync and async, with and without retries,
the server killed before or after its first response (a stand-in server, no TensorFlow)."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from filtercast_client.client import Accepted, AsyncClient, Client, Summary
from filtercast_client.errors import ProtocolError
from filtercast_client.local_server import free_port

FAKE = Path(__file__).resolve().parents[1] / "support" / "fake_server.py"
DEADLINE = 5.0
# How long past its deadline a call may take to return on a busy machine before it
# counts as hanging (before the fix, the sync client never returned at all).
SLACK = 30.0


class FakeServer:
    def __init__(self, mode: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(FAKE), str(self.port), mode], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline().strip() == "up"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill_when_called(self) -> threading.Thread:
        def watch() -> None:
            if self.process.stdout.readline().strip() == "got":
                self.process.send_signal(signal.SIGKILL)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def run_sync(address: str, attempts: int) -> list:
    with Client(address, attempts=attempts) as client:
        return list(client.visualize(filters="0:2", timeout=DEADLINE))


def run_async(address: str, attempts: int) -> list:
    async def go() -> list:
        async with AsyncClient(address, attempts=attempts) as client:
            return [e async for e in client.visualize(filters="0:2", timeout=DEADLINE)]

    return asyncio.run(go())


def outcome_within(function, *args) -> BaseException | list:
    """What `function(*args)` returned or raised, or fail if it is still running after SLACK."""
    box: list = []

    def target() -> None:
        try:
            box.append(function(*args))
        except BaseException as error:  # handed to the test
            box.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE + SLACK)
    assert box, f"the call was still running {DEADLINE + SLACK:.0f} s after a {DEADLINE} s deadline"
    return box[0]


@pytest.mark.parametrize("mode", ["hang", "one"], ids=["before-first", "after-first"])
@pytest.mark.parametrize("attempts", [5, 1], ids=["retries", "no-retries"])
@pytest.mark.parametrize("runner", [run_sync, run_async], ids=["sync", "async"])
def test_a_server_killed_mid_call_ends_the_call(runner, attempts, mode) -> None:
    server = FakeServer(mode)
    try:
        server.kill_when_called()
        result = outcome_within(runner, server.address, attempts)
    finally:
        server.stop()
    assert isinstance(result, grpc.RpcError), result
    assert result.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.mark.parametrize("runner", [run_sync, run_async], ids=["sync", "async"])
def test_a_server_that_never_answers_hits_the_deadline(runner) -> None:
    server = FakeServer("hang")
    try:
        result = outcome_within(runner, server.address, 5)
    finally:
        server.stop()
    assert isinstance(result, grpc.RpcError) and result.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize("runner", [run_sync, run_async], ids=["sync", "async"])
def test_a_stream_is_retried_on_a_restarted_server_before_its_first_response(runner) -> None:
    first = FakeServer("hang")
    watcher = first.kill_when_called()
    replacement: list[FakeServer] = []

    def restart() -> None:  # the same port answers again once the first server is gone
        watcher.join(30)
        first.process.wait(10)
        replacement.append(FakeServer("answer", port=first.port))

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    try:
        events = outcome_within(runner, first.address, 5)
    finally:
        restarter.join(30)
        for server in (first, *replacement):
            server.stop()
    assert not isinstance(events, BaseException), events
    assert isinstance(events[0], Accepted) and isinstance(events[-1], Summary)


def test_the_retry_hint_is_read_from_sync_and_async_errors() -> None:
    from google.protobuf import duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    from filtercast_client.client import retry_after

    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="full")
    status.details.add().Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=5 * 10**8))
    )
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    refused = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), trailers, details="full"
    )
    assert retry_after(refused) == 2.5
    plain = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="gone"
    )
    assert retry_after(plain) is None


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("stray", "filter 1000000, which the request did not ask for"),
        ("negative", "filter -7, which the request did not ask for"),
        ("duplicate", "filter 0 twice"),
        ("malformed", "an undecodable PNG image"),
        ("blank", "an event this client does not know"),
        ("short", "the Summary came after 1 of 2 filters"),
    ],
)
def test_a_lying_server_is_a_protocol_error_never_a_wrong_manifest(
    mode: str, words: str, tmp_path: Path
) -> None:
    server = FakeServer(mode)
    try:
        with Client(server.address) as client, pytest.raises(ProtocolError, match=words):
            list(client.visualize(filters="0:2"))
        out = tmp_path / "out"
        cli = Path(sys.executable).with_name("filtercast")
        result = run_or_dump(
            [str(cli), "visualize", "--server", server.address, "--filters", "0:2", "--out", out]
        )
    finally:
        server.stop()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "broke the protocol" in result.stderr and words in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert all(0 <= f["index"] <= 1 for f in manifest["filters"])
    assert len({f["index"] for f in manifest["filters"]}) == len(manifest["filters"])


def run_or_dump(command: list) -> subprocess.CompletedProcess:
    """Run a command; if it hangs, fail with every thread's stack (faulthandler on SIGABRT)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"the command hung; its threads:\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

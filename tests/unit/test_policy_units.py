"""Unit tests of the serving policy's pieces: final status codes, peers, tokens, stream
admission, throttled logs, and a write that fails because the client left."""

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from filtercast_server.errors import RefusedError
from filtercast_server.observability.logs import ThrottledLog, throttle_loop_errors
from filtercast_server.serving.admission import NewStepBudget, StreamAdmission
from filtercast_server.serving.auth import AuthConfigError, AuthError, TokenAuthenticator
from filtercast_server.serving.interceptor import final_code, peer_host
from filtercast_server.serving.streams import CallEndedError, StalledError, Stream


class FakeContext:
    def __init__(self, code=None, remaining=None, write=None) -> None:
        self._code, self._remaining, self._write = code, remaining, write

    def code(self):
        return self._code

    def time_remaining(self):
        return self._remaining

    async def write(self, message) -> None:
        await self._write()


@pytest.mark.parametrize(
    ("context", "error", "expected"),
    [
        (FakeContext(), None, grpc.StatusCode.OK),
        (FakeContext(code=grpc.StatusCode.NOT_FOUND), Exception("abort"), "NOT_FOUND"),
        (FakeContext(), asyncio.CancelledError(), "CANCELLED"),
        (FakeContext(remaining=12.0), GeneratorExit(), "CANCELLED"),
        (FakeContext(remaining=0), asyncio.CancelledError(), "DEADLINE_EXCEEDED"),
        # The client's own deadline timer fired a moment before the server's.
        (FakeContext(remaining=0.004), asyncio.CancelledError(), "DEADLINE_EXCEEDED"),
        (FakeContext(remaining=0.5), asyncio.CancelledError(), "CANCELLED"),
        (FakeContext(), CallEndedError(), "CANCELLED"),
        (FakeContext(), RuntimeError("a bug"), "UNKNOWN"),
    ],
)
def test_the_final_code_is_what_the_client_saw(context, error, expected) -> None:
    expected = expected if isinstance(expected, grpc.StatusCode) else grpc.StatusCode[expected]
    assert final_code(context, error) == expected


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.1.2.3:50000", "10.1.2.3"),
        ("ipv6:[::1]:41234", "::1"),
        ("ipv6:%5B::1%5D:41234", "::1"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_peers_lose_their_port(peer, host) -> None:
    assert peer_host(peer) == host


def test_a_write_the_client_will_never_read_is_a_cancelled_call() -> None:
    async def gone() -> None:
        raise RuntimeError("ExecuteBatchError: the call is over")

    async def stuck() -> None:
        await asyncio.sleep(3600)

    def stream(write) -> SimpleNamespace:  # what Stream.send reads
        return SimpleNamespace(
            tools=SimpleNamespace(stall_seconds=0.05), context=FakeContext(write=write)
        )

    with pytest.raises(CallEndedError):
        asyncio.run(Stream.send(stream(gone), object()))

    async def stalls() -> None:
        with pytest.raises(StalledError) as info:
            await Stream.send(stream(stuck), object())
        assert not info.value.write.done()  # still pending: the status waits behind it
        info.value.write.cancel()

    asyncio.run(stalls())


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\nalice 0123456789abcdef0123\n\nbob fedcba9876543210fedc read\n")
    auth = TokenAuthenticator.from_file(path)
    alice = auth.identify([("authorization", "Bearer 0123456789abcdef0123")])
    assert alice.name == "alice" and alice.may_call("VisualizeFilters")
    bob = auth.identify([("authorization", b"bearer fedcba9876543210fedc")])
    assert bob.role == "read" and not bob.may_call("VisualizeFilters")
    assert not bob.may_call("AnalyzeImage") and bob.may_call("DescribeModel")
    assert bob.may_call("ListModels")
    for metadata in ([], [("authorization", "Basic abc")], [("authorization", "Bearer ")]):
        with pytest.raises(AuthError, match="needs a bearer token"):
            auth.identify(metadata)
    with pytest.raises(AuthError, match="not accepted") as info:
        auth.identify([("authorization", "Bearer 0123456789abcdef0124")])
    assert "0123456789abcdef" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice short\n", "at least 16 characters"),
        ("alice 0123456789abcdef0123 admin\n", "role must be one of"),
        ("alice 0123456789abcdef0123\nalice 1123456789abcdef0123\n", "listed twice"),
        ("just-one-field\n", r"line 1: expected 'NAME TOKEN \[ROLE\]'"),
        ("", "no tokens configured"),
    ],
)
def test_bad_tokens_files_stop_the_start(tmp_path: Path, text, message) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(AuthConfigError, match=message):
        TokenAuthenticator.from_file(path)


def test_stream_admission_limits_in_all_and_per_client() -> None:
    admission = StreamAdmission(max_streams=3, max_per_client=2)
    with admission.admit("a"), admission.admit("a") as second:
        with pytest.raises(RefusedError) as mine:
            admission.admit("a").__enter__()
        assert mine.value.reason == "client_streams" and mine.value.retry_after > 0
        with admission.admit("b"):
            with pytest.raises(RefusedError) as full:
                admission.admit("c").__enter__()
            assert full.value.reason == "streams"
        second.release()
        second.release()  # idempotent
        assert admission.open == 1
        with admission.admit("a"):
            assert admission.open == 2
    assert admission.open == 0


def test_throttled_log_says_what_it_held_back(caplog) -> None:
    throttle = ThrottledLog(logging.getLogger("test"), interval=3600, max_keys=2)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            throttle.warning(("a", "bad"), "bad input from %s", "a")
        throttle.warning(("b", "bad"), "bad input from %s", "b")
        throttle.warning(("c", "bad"), "bad input from %s", "c")  # forgets a: max 2 keys
        throttle.warning(("a", "bad"), "bad input from %s", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "bad input from a",
        "bad input from b",
        "bad input from c",
        "bad input from a",
    ]


def test_the_event_loops_own_errors_are_throttled_with_their_traceback(caplog) -> None:
    """A descriptor flood made asyncio log 56,575 ERROR lines a minute; now one per kind."""
    logger = logging.getLogger("test.loop")
    loop = asyncio.new_event_loop()
    try:
        throttle_loop_errors(loop, logger)
        with caplog.at_level(logging.ERROR, logger="test.loop"):
            for _ in range(1000):
                error = OSError(24, "Too many open files")
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": error}
                )
            loop.call_exception_handler({"message": "Task exception was never retrieved"})
    finally:
        loop.close()
    lines = [r for r in caplog.records if r.name == "test.loop"]
    assert [r.getMessage() for r in lines] == [
        "socket.accept() out of system resource",
        "Task exception was never retrieved",
    ]
    assert lines[0].levelno == logging.ERROR and lines[0].exc_info[0] is OSError


def test_new_step_budget_is_per_client_and_refills_over_a_minute() -> None:
    now = [100.0]
    budget = NewStepBudget(6, clock=lambda: now[0])
    for _ in range(6):
        budget.charge("a")
    with pytest.raises(RefusedError) as refused:
        budget.charge("a")
    assert refused.value.reason == "client_new_steps"
    assert refused.value.retry_after == pytest.approx(10.0)  # one token: 60 s / 6
    budget.charge("b")  # another client has its own
    now[0] += 10.0
    budget.charge("a")  # one token came back
    with pytest.raises(RefusedError):
        budget.charge("a")
    now[0] += 3600.0  # an idle client refills to the bucket's size, never beyond
    for _ in range(6):
        budget.charge("a")
    with pytest.raises(RefusedError):
        budget.charge("a")


def test_new_step_budget_keeps_a_bounded_number_of_clients() -> None:
    now = [0.0]
    budget = NewStepBudget(2, clock=lambda: now[0])
    budget.MAX_CLIENTS = 8
    for client in range(8):
        budget.charge(f"c{client}")
    budget.charge("c0")
    now[0] += 60.0  # all refilled: a newcomer drops the full buckets
    budget.charge("new")
    assert len(budget._tokens) == 1
    for client in range(20):  # none full: half go, the table never grows past the bound
        budget.charge(f"d{client}")
        assert len(budget._tokens) <= 8

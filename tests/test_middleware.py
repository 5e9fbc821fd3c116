"""The bridge's ASGI middleware, each on its own, with ASGI messages made here (no server): the rules of
bridge/middleware.py, timing included, on windows of a few hundred milliseconds."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge import middleware
from bridge.config import HttpLimits
from bridge.http import BodyTimeout, SendTimeout
from bridge.middleware import (
    BodyEnd,
    Conformance,
    EarlyAnswer,
    LastResort,
    RateLimitedReceive,
    SendDeadline,
    UploadRate,
    head_problem,
)


def scope(headers=((b"host", b"x"),), path=b"/", version="1.1", body=False, method="POST") -> dict:
    headers = list(headers)
    if body:
        headers.append((b"content-length", b"100"))
    return {"type": "http", "http_version": version, "method": method, "path": path.decode(), "raw_path": path,
            "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000)}


def body_messages(*pieces, delays=None):
    """A receive() giving `pieces` (the last with more_body False), each after its delay in seconds."""
    queue = list(pieces)
    delays = list(delays or [0] * len(pieces))
    received = []

    async def receive():
        if not queue:
            await asyncio.sleep(3600)
        await asyncio.sleep(delays.pop(0))
        piece = queue.pop(0)
        received.append(piece)
        return {"type": "http.request", "body": piece, "more_body": bool(queue)}

    receive.received = received
    return receive


class Sent(list):
    async def __call__(self, message):
        self.append(message)


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------------- body end


def server_body(*pieces):
    """A receive() as granian's: every piece says more_body True, then an empty message ends the body."""
    messages = [{"type": "http.request", "body": piece, "more_body": True} for piece in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    calls = []

    async def receive():
        calls.append(1)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    receive.calls = calls
    return receive


def test_a_body_framed_by_content_length_ends_on_its_last_piece():
    """Its last piece says more_body False: the application never asks for granian's empty message."""
    app, receive = reading_app(), server_body(b"a" * 60, b"b" * 40)
    run(BodyEnd(app)(scope(body=True), receive, Sent()))  # Content-Length: 100
    assert app.got == b"a" * 60 + b"b" * 40 and len(receive.calls) == 2


@pytest.mark.parametrize("framing", [[(b"transfer-encoding", b"chunked")],
                                     [(b"transfer-encoding", b"chunked"), (b"content-length", b"100")]])
def test_a_chunked_body_ends_with_the_servers_empty_message(framing):
    """Chunked (Transfer-Encoding frames the body even beside a Content-Length): only its end says so."""
    app, receive = reading_app(), server_body(b"a" * 60, b"b" * 40)
    run(BodyEnd(app)(scope(headers=[(b"host", b"x"), *framing]), receive, Sent()))
    assert app.got == b"a" * 60 + b"b" * 40 and len(receive.calls) == 3


# ------------------------------------------------------------------------------------------ upload rate


def reading_app(pause: float = 0.0):
    async def app(scope, receive, send):
        app.got = b""
        while True:
            message = await receive()
            app.got += message.get("body", b"")
            if not message.get("more_body"):
                return
            await asyncio.sleep(pause)  # the application busy elsewhere (a worker slow to take bytes)

    return app


def test_a_client_that_stalls_is_stopped_after_one_window():
    app = reading_app()
    guarded = UploadRate(app, min_rate=1000, window=0.2)
    with pytest.raises(BodyTimeout):
        run(guarded(scope(body=True), body_messages(b"a" * 10, b"b", delays=[0, 5]), Sent()))


def test_a_fast_client_passes_and_every_byte_arrives_in_order():
    app = reading_app()
    run(UploadRate(app, min_rate=1000, window=0.2)(scope(body=True), body_messages(b"a" * 500, b"b" * 500,
                                                                                        delays=[0.05, 0.05]), Sent()))
    assert app.got == b"a" * 500 + b"b" * 500


def test_a_slow_application_never_makes_the_client_time_out():
    """Only time spent waiting for the client counts: the application pausing 0.5 s between reads, three
    windows of 0.2 s, while every piece is there at once."""
    app = reading_app(pause=0.5)
    run(UploadRate(app, min_rate=1000, window=0.2)(scope(body=True), body_messages(b"a" * 300, b"b" * 300, b"c"),
                                                   Sent()))
    assert app.got.endswith(b"c")


def test_a_receive_still_pending_at_the_end_of_a_good_window_is_kept():
    """Enough bytes in the first window, the next piece late but inside the second: it is delivered, not lost
    to a cancelled receive."""
    app = reading_app()
    run(UploadRate(app, min_rate=100, window=0.2)(scope(body=True), body_messages(b"a" * 100, b"z",
                                                                                       delays=[0, 0.3]), Sent()))
    assert app.got == b"a" * 100 + b"z"


def test_a_request_without_a_body_is_not_timed():
    async def app(scope, receive, send):
        app.message = await receive()

    run(UploadRate(app, min_rate=10**9, window=0.01)(scope(), body_messages(b""), Sent()))
    assert app.message["body"] == b""


# ----------------------------------------------------------------------------------------- early answer


def answering_app(status: int, reads: int = 0):
    async def app(scope, receive, send):
        for _ in range(reads):
            await receive()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    return app


def test_an_answer_before_the_body_says_close_and_the_rest_is_read_and_dropped():
    receive, sent = body_messages(b"a", b"b", b"c"), Sent()
    run(EarlyAnswer(answering_app(413), drain_limit=1 << 20)(scope(body=True), receive, sent))
    assert (b"connection", b"close") in sent[0]["headers"]
    assert receive.received == [b"a", b"b", b"c"]  # drained: the client could send all of it


def test_draining_stops_at_its_limit():
    receive = body_messages(*[b"x" * 100] * 10)
    run(EarlyAnswer(answering_app(413), drain_limit=250)(scope(body=True), receive, Sent()))
    assert len(receive.received) == 3


def test_an_answer_after_the_whole_body_keeps_the_connection():
    receive, sent = body_messages(b"a", b"b"), Sent()
    run(EarlyAnswer(answering_app(200, reads=2), drain_limit=1 << 20)(scope(body=True), receive, sent))
    assert all(name != b"connection" for name, _ in sent[0]["headers"])


def test_a_client_expecting_100_continue_answered_first_is_not_waited_for(monkeypatch):
    """Answered before it sent a byte, a client that asked `Expect: 100-continue` may never send its body: the
    drain gives it a moment to start, then ends (it held the connection open for a whole rate window)."""
    monkeypatch.setattr(middleware, "EXPECT_GRACE_SECONDS", 0.2)
    expecting = scope(headers=((b"host", b"x"), (b"expect", b"100-Continue")), body=True)
    started = time.monotonic()
    receive = body_messages(b"a", delays=[30])
    run(EarlyAnswer(answering_app(401), drain_limit=1 << 20)(expecting, receive, Sent()))
    assert time.monotonic() - started < 5 and receive.received == []


def test_a_client_expecting_100_continue_that_starts_sending_is_drained(monkeypatch):
    monkeypatch.setattr(middleware, "EXPECT_GRACE_SECONDS", 0.5)
    expecting = scope(headers=((b"host", b"x"), (b"expect", b"100-continue")), body=True)
    receive = body_messages(b"a", b"b", b"c", delays=[0.1, 0.3, 0.3])  # only the first must come in the grace
    run(EarlyAnswer(answering_app(401), drain_limit=1 << 20)(expecting, receive, Sent()))
    assert receive.received == [b"a", b"b", b"c"]


def test_a_drain_ends_when_the_client_is_too_slow():
    app = EarlyAnswer(answering_app(413), drain_limit=1 << 20)
    guarded = UploadRate(app, min_rate=1000, window=0.2)
    run(guarded(scope(body=True), body_messages(b"a", b"b", delays=[0, 10]), Sent()))  # ends; no BodyTimeout


# ------------------------------------------------------------------------------------------ conformance


LIMITS = HttpLimits()


@pytest.mark.parametrize(("request_scope", "reason", "status"), [
    (scope(headers=[]), "bad_request", 400),
    (scope(headers=[(b"host", b"")]), "bad_request", 400),
    (scope(headers=[(b"host", b"a"), (b"host", b"b")]), "bad_request", 400),
    (scope(path=b"http://x"), "bad_request", 400),
    (scope(path=b""), "bad_request", 400),
    (scope(headers=[(b"host", b"x"), (b"transfer-encoding", b"gzip, chunked")]), "not_implemented", 501),
    (scope(headers=[(b"host", b"x"), (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")]),
     "not_implemented", 501),
    (scope(headers=[(b"transfer-encoding", b"chunked")], version="1.0"), "bad_request", 400),
    (scope(headers=[(b"transfer-encoding", b"chunked")], version="1"), "bad_request", 400),
    (scope(headers=[(b"host", b"x"), (b"x-big", b"a" * (64 << 10))]), "request_header_fields_too_large", 431),
    (scope(headers=[(b"host", b"x")] + [(b"x-%d" % i, b"1") for i in range(100)]),
     "request_header_fields_too_large", 431),
    (scope(path=b"/" + b"a" * (8 << 10)), "uri_too_long", 414),
])
def test_heads_the_rfc_or_our_limits_refuse(request_scope, reason, status):
    problem = head_problem(request_scope, LIMITS)
    assert problem is not None and problem[0] == reason and problem[1].status == status


@pytest.mark.parametrize("request_scope", [
    scope(), scope(headers=[], version="1.0"), scope(headers=[(b"host", b"")], version="1"),
    scope(headers=[(b"host", b"x"), (b"transfer-encoding", b"Chunked")]),
    scope(path=b"/a%20b"),
])
def test_heads_that_pass(request_scope):
    assert head_problem(request_scope, LIMITS) is None


def test_a_refused_head_gets_json_and_close_without_reaching_the_application():
    reasons, sent = [], Sent()

    async def app(scope, receive, send):
        raise AssertionError("reached the application")

    run(Conformance(app, LIMITS, reasons.append)(scope(headers=[]), body_messages(b""), sent))
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    assert b'"bad_request"' in sent[1]["body"] and reasons == ["bad_request"]


def test_an_upgrade_request_is_answered_with_connection_close():
    sent = Sent()
    upgrade = scope(headers=[(b"host", b"x"), (b"connection", b"Upgrade"), (b"upgrade", b"h2c")], method="GET")
    run(Conformance(answering_app(200), LIMITS, lambda reason: None)(upgrade, body_messages(b""), sent))
    assert sent[0]["status"] == 200 and (b"connection", b"close") in sent[0]["headers"]


# ----------------------------------------------------------------------------------------- send deadline


def test_an_answer_left_unread_raises_send_timeout():
    reasons = []

    async def stuck_send(message):
        await asyncio.sleep(3600)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    with pytest.raises(SendTimeout):
        run(SendDeadline(app, 0.2, reasons.append)(scope(), body_messages(b""), stuck_send))
    assert reasons == ["send_timeout"]


def test_a_send_that_completes_in_time_passes_through():
    sent = Sent()
    run(SendDeadline(answering_app(204), 0.2, lambda reason: None)(scope(), body_messages(b""), sent))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_a_reader_cancelled_while_waiting_loses_no_piece_to_the_next_one():
    """The request's reader is cancelled mid-wait (its worker refused it); the drain after the early answer
    then reads on: it gets the piece that was on its way, not a cancelled future."""
    async def scenario():
        receive = RateLimitedReceive(body_messages(b"a", b"b", delays=[0.1, 0]), min_rate=1, window=5)
        reader = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert (await receive())["body"] == b"a"
        assert (await receive())["body"] == b"b"

    run(scenario())


def test_an_exception_that_escapes_is_logged_and_answered_500_in_json(caplog):
    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    sent = Sent()
    run(LastResort(broken)(scope(), body_messages(b""), sent))
    assert sent[0]["status"] == 500 and b'"bridge_error"' in sent[1]["body"]
    assert "the bridge's HTTP layer failed" in caplog.text and "RuntimeError: a bug" in caplog.text


def test_an_exception_after_the_answer_started_is_logged_only(caplog):
    async def breaks_mid_answer(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-answer")

    sent = Sent()
    run(LastResort(breaks_mid_answer)(scope(), body_messages(b""), sent))
    assert [m["type"] for m in sent] == ["http.response.start"] and "mid-answer" in caplog.text

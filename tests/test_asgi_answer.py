"""How the bridge hands a streamed answer to the HTTP server: every piece as `bytes`, small ones together,
and a small answer in a single send.

granian copies a `bytes` body at once but reads any other buffer (the memoryviews of gRPC's messages that
contract/wire.py gives the bridge) element by element: 1 s of CPU per 64 MiB (benchmarks/bench_asgi_body.py,
BENCHMARKS.md). ASGI messages made here, no server."""

from __future__ import annotations

import asyncio

import pytest

from bridge.app import ANSWER_PIECE_BYTES, DisconnectWatcher, send_response
from bridge.http import Request, Response
from bridge.translate import BadWorkerAnswer


def answer_as_sent(pieces: list, breaks: BaseException | None = None) -> list[dict]:
    """The http.response.body messages send_response makes of a streamed answer made of `pieces` (then
    raising `breaks`, when given, as a worker's stream that breaks off does)."""
    sent = []

    async def body():
        for piece in pieces:
            yield piece
        if breaks is not None:
            raise breaks

    async def send(message):
        sent.append(message)

    async def receive():
        await asyncio.sleep(3600)

    async def main():
        scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"",
                 "headers": [(b"host", b"x")], "client": ("127.0.0.1", 5000), "http_version": "1.1"}
        request = Request(scope, receive)
        length = sum(len(p) for p in pieces) + (1 if breaks is not None else 0)
        response = Response(200, [("Content-Type", "multipart/related")], body(), content_length=length)
        await send_response(request, response, send, DisconnectWatcher(request, receive, None))

    if breaks is not None:
        with pytest.raises(type(breaks)):
            asyncio.run(main())
    else:
        asyncio.run(main())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    if breaks is None:
        assert b"".join(m["body"] for m in bodies) == b"".join(bytes(p) for p in pieces)
        assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    else:
        assert all(m["more_body"] for m in bodies)
    return bodies


def test_a_streamed_answer_of_memoryviews_reaches_the_server_as_bytes():
    big = ANSWER_PIECE_BYTES
    pieces = [memoryview(b"head"), memoryview(bytearray(b"x" * big)), memoryview(b"tail")]
    bodies = answer_as_sent(pieces)
    assert [type(m["body"]) for m in bodies] == [bytes, bytes]


def test_small_pieces_go_out_together_in_sends_of_at_least_a_chunk():
    """Every send() is a call into granian: a part's head and a small mask go out in one, and the JSON with
    the first of them."""
    pieces = [memoryview(b"{}")] + [memoryview(b"h" * 200), memoryview(bytearray(b"m" * (256 << 10)))] * 9
    bodies = answer_as_sent(pieces + [memoryview(b"end")])
    assert len(bodies) == 3  # the JSON and 4 masks, 4 masks, the last mask and the end
    assert bodies[0]["body"].startswith(b"{}hhh")
    assert all(len(m["body"]) >= ANSWER_PIECE_BYTES for m in bodies[:-1])


def test_a_small_answer_goes_out_in_a_single_send():
    """A bounding-box answer: its JSON, the hashes part and the end, all in one send (it was two)."""
    bodies = answer_as_sent([b'--b\r\n{"json": 1}', b"\r\n--b\r\nhashes", b"\r\n--b--\r\n"])
    assert len(bodies) == 1 and bodies[0]["more_body"] is False


BREAKS = [BadWorkerAnswer(["parts[0]: 10 bytes sent, 24 declared"]), asyncio.CancelledError()]


@pytest.mark.parametrize("breaks", BREAKS, ids=["bad answer", "cancelled"])
def test_an_answer_that_breaks_off_before_its_first_send_still_sends_its_json_first(breaks):
    """The status line leaves with the first body bytes: the JSON goes out alone before the break is raised,
    so that the client sees a 200 cut short (as when the JSON went out at once), never the server's own 500."""
    bodies = answer_as_sent([b'{"json": 1}', b"part head", b"ten bytes."], breaks)
    assert [m["body"] for m in bodies] == [b'{"json": 1}']


def test_an_answer_that_breaks_off_later_shows_the_client_what_it_did_before():
    """The JSON, then every full send, as when the JSON went out at once; the small pieces gathered since
    the last full send are not sent."""
    mask = b"m" * ANSWER_PIECE_BYTES
    bodies = answer_as_sent([b"{}", b"head", mask, b"head", b"small"], BREAKS[0])
    assert b"".join(m["body"] for m in bodies) == b"{}head" + mask

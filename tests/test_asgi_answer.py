"""How the bridge hands a streamed answer to the HTTP server: every piece as `bytes`, small ones together.

granian copies a `bytes` body at once but reads any other buffer (the memoryviews of gRPC's messages that
contract/wire.py gives the bridge) element by element: 1 s of CPU per 64 MiB (benchmarks/bench_asgi_body.py,
BENCHMARKS.md). ASGI messages made here, no server."""

from __future__ import annotations

import asyncio

from bridge.app import ANSWER_PIECE_BYTES, DisconnectWatcher, send_response
from bridge.http import Request, Response


def answer_as_sent(pieces: list) -> list[dict]:
    """The http.response.body messages send_response makes of a streamed answer made of `pieces`."""
    sent = []

    async def body():
        for piece in pieces:
            yield piece

    async def send(message):
        sent.append(message)

    async def receive():
        await asyncio.sleep(3600)

    async def main():
        scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"",
                 "headers": [(b"host", b"x")], "client": ("127.0.0.1", 5000), "http_version": "1.1"}
        request = Request(scope, receive)
        length = sum(len(p) for p in pieces)
        response = Response(200, [("Content-Type", "multipart/related")], body(), content_length=length)
        await send_response(request, response, send, DisconnectWatcher(request, receive, None))

    asyncio.run(main())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == b"".join(bytes(p) for p in pieces)
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    return bodies


def test_a_streamed_answer_of_memoryviews_reaches_the_server_as_bytes():
    big = ANSWER_PIECE_BYTES
    pieces = [memoryview(b"head"), memoryview(bytearray(b"x" * big)), memoryview(b"tail")]
    bodies = answer_as_sent(pieces)
    assert [type(m["body"]) for m in bodies] == [bytes, bytes, bytes]


def test_after_the_first_piece_small_ones_go_out_together_in_sends_of_at_least_a_chunk():
    """Every send() is a round trip to granian's thread: a part's head and a small mask go out in one."""
    pieces = [memoryview(b"{}")] + [memoryview(b"h" * 200), memoryview(bytearray(b"m" * (256 << 10)))] * 9
    bodies = answer_as_sent(pieces + [memoryview(b"end")])
    assert len(bodies) == 4  # the JSON at once (the status line goes with it), then 4 + 4 + 1 masks
    assert all(len(m["body"]) >= ANSWER_PIECE_BYTES for m in bodies[1:-1])

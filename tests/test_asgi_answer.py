"""How the bridge hands a streamed answer to the HTTP server: every piece as `bytes`.

granian copies a `bytes` body at once but reads any other buffer (the memoryviews of gRPC's messages that
contract/wire.py gives the bridge) element by element: 1 s of CPU per 64 MiB (benchmarks/bench_asgi_body.py,
BENCHMARKS.md). ASGI messages made here, no server."""

from __future__ import annotations

import asyncio

from bridge.app import DisconnectWatcher, send_response
from bridge.http import Request, Response


def test_a_streamed_answer_of_memoryviews_reaches_the_server_as_bytes():
    pieces = [memoryview(b"head"), memoryview(bytearray(b"x" * 70_000)), memoryview(b"tail")]
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
    assert [type(m["body"]) for m in bodies] == [bytes] * len(pieces)
    assert b"".join(m["body"] for m in bodies) == b"".join(bytes(p) for p in pieces)
    assert [m["more_body"] for m in bodies] == [True, True, False]

"""What the bridge asks of granian per request, recorded on the real server: granian, the bridge's middleware
and application in-process (bridge.server.create_server) in front of a real mock-model worker, spoken to
over raw sockets. Every `receive()` and `send()` is a call into granian (docs/decisions.md): a small answer
goes out in a single send after its head, and a body framed by Content-Length ends on its last piece."""

from __future__ import annotations

import json
import re
import socket

import pytest

import bridge.server
from bridge.config import BridgeConfig
from tests import http_helpers as http


class Recorder:
    """ASGI layers that record the messages passing: `outer` as granian gives and takes them, `inner` as the
    application gets them, inside every middleware."""

    def __init__(self) -> None:
        self.sent: list[dict] = []  # what the bridge handed to granian's send()
        self.received: list[dict] = []  # what the application's receive() returned

    def clear(self) -> None:
        self.sent.clear()
        self.received.clear()

    def outer(self, app):
        async def recorded(scope, receive, send):
            async def recorded_send(message):
                self.sent.append(message)
                await send(message)

            await app(scope, receive, recorded_send)

        return recorded

    def inner(self, app):
        async def recorded(scope, receive, send):
            async def recorded_receive():
                message = await receive()
                self.received.append(message)
                return message

            await app(scope, recorded_receive, send)

        return recorded


@pytest.fixture(scope="module")
def recorded(mock_worker):
    recorder = Recorder()
    protect = bridge.server.protect
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bridge.server, "protect", lambda app, limits, on_reject: recorder.outer(
            protect(recorder.inner(app), limits, on_reject)))
        server = bridge.server.create_server(BridgeConfig(routes={"/": f"127.0.0.1:{mock_worker.port}"},
                                                          listen="127.0.0.1:0"))
    yield recorder, server.port
    server.stop(0)


@pytest.fixture(scope="module")
def bbox_body(standard_study) -> bytes:
    request_json = json.dumps({"inference_command": "get-bounding-box-2d"}).encode()
    return http.hand_built_body([("application/json", request_json),
                                 ("application/dicom", standard_study.instances[0].path.read_bytes())], "b")


def exchange(port: int, data: bytes, answers: int = 1) -> bytes:
    """Sends `data` and reads until `answers` complete answers (by their Content-Length) have come."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while len(complete_answers(received)) < answers:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {received[:300]!r}"
            received += chunk
        return received


def complete_answers(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each complete answer at the start of `data`."""
    answers = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
        if len(rest) < length:
            break
        answers.append((int(head.split()[1]), rest[:length]))
        data = rest[length:]
    return answers


def request_bodies(recorder: Recorder) -> list[dict]:
    return [m for m in recorder.received if m["type"] == "http.request"]


def test_a_small_answer_goes_out_in_one_send_after_its_head(recorded, bbox_body):
    recorder, port = recorded
    recorder.clear()
    [(status, answer)] = complete_answers(exchange(port, http.raw_post_head(bbox_body) + bbox_body))
    assert status == 200 and answer.endswith(b"--\r\n")
    assert [(m["type"], m.get("more_body", False)) for m in recorder.sent] == [
        ("http.response.start", False), ("http.response.body", False)]


def test_a_body_framed_by_content_length_ends_on_its_last_piece(recorded, bbox_body):
    """The piece with the body's last bytes says more_body False: the application learns that the body has
    ended without asking granian for the empty message it sends after it."""
    recorder, port = recorded
    recorder.clear()
    assert complete_answers(exchange(port, http.raw_post_head(bbox_body) + bbox_body))[0][0] == 200
    pieces = request_bodies(recorder)
    last = next(n for n, m in enumerate(pieces) if not m.get("more_body", False))
    assert pieces[last]["body"] and sum(len(m["body"]) for m in pieces[: last + 1]) == len(bbox_body)


def test_a_chunked_body_ends_with_the_servers_empty_message(recorded, bbox_body):
    recorder, port = recorded
    recorder.clear()
    head = http.raw_post_head(bbox_body).replace(b"Content-Length: %d" % len(bbox_body),
                                                 b"Transfer-Encoding: chunked")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(bbox_body), bbox_body)
    assert complete_answers(exchange(port, head + chunked))[0][0] == 200
    pieces = request_bodies(recorder)
    last = next(n for n, m in enumerate(pieces) if not m.get("more_body", False))
    assert pieces[last]["body"] == b"" and sum(len(m["body"]) for m in pieces) == len(bbox_body)


def test_bytes_after_the_content_length_are_the_next_request_not_the_body(recorded, bbox_body):
    """hyper frames the body by its Content-Length: what follows is a request of its own, answered next."""
    recorder, port = recorded
    recorder.clear()
    data = http.raw_post_head(bbox_body) + bbox_body + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = complete_answers(exchange(port, data, answers=2))
    assert [status for status, _ in answers] == [200, 200] and answers[1][1].startswith(b"inference-service is up")
    assert sum(len(m["body"]) for m in request_bodies(recorder)) == len(bbox_body)

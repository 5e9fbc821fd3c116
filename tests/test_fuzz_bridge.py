"""Property-based fuzzing (hypothesis) of the bridge's HTTP endpoint with mutated real requests.

A real bridge (bridge.server.create_server) in front of a real mock-model worker, both in this process on
loopback ports, receives over raw sockets a real inference request (the request JSON, then DICOM files
written by pydicom) damaged in its request line, headers, Content-Length, Transfer-Encoding, boundary,
part headers, JSON, DICOM bytes, by byte flips, insertions, deletions, truncation, extra bytes and a
pipelined second request, and sent in random pieces. What must hold for every one:

* the bridge answers with well-formed HTTP/1.1 responses (parsed by llhttp, each complete), within a
  time bound; it may close a connection without an answer only when no request byte was sent;
* no answer is a 5xx (the mock model never fails; nothing a client sends may make the bridge fail);
* an answer other than 200 has a JSON error body with a code and a message; a 200 is multipart/related;
* afterwards the bridge still answers /ping, and its process's threads, open file descriptors and the
  worker's spool folder are back to what they were before the first example.

The bridge's timeouts are short here (a truncated body costs half a second, not twenty), so that the
"ci" profile (tests/conftest.py) keeps this file at several seconds; `make fuzz` runs the "long" one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import httptools
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from bridge.config import BridgeConfig, HttpLimits
from bridge.server import create_server
from mock_model import MockModel
from tests.conftest import start_worker
from tests.dicom_factory import SeriesSpec, write_study

ANSWER_WITHIN = 15.0  # seconds for a whole exchange; the bridge's own timeouts below are under 1 s
LIMITS = HttpLimits(header_timeout=0.5, body_timeout=0.5, min_upload_rate=1 << 30,
                    send_timeout=2.0)
BOUNDARY = "fuzz-boundary-7d1e"
COMMANDS = [c for c in MockModel.commands if c not in ("get-secondary-capture", "get-structured-report")]
PING = b"GET /ping HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n"


def examples(count: int) -> int:
    """`count` examples under the "ci" profile, scaled with the loaded one (20x under "long")."""
    return max(1, count * settings.default.max_examples // 100)


# --------------------------------------------------------------------------------------------------
# The services, and what the process holds
# --------------------------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def spool_entries(worker) -> list[str]:
    return sorted(p.name for p in worker.spool.path.iterdir() if p.name != ".lock")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    study = write_study(tmp_path_factory.mktemp("fuzz-study") / "study", [
        SeriesSpec("ct", rows=16, cols=16, count=2), SeriesSpec("mr", rows=12, cols=8, count=1, modality="MR")])
    # Every part spooled to disk (no memory budget): a call that leaves files behind is seen.
    worker = start_worker(MockModel(), model="mock_model", spool_dir=str(tmp_path_factory.mktemp("spool")),
                          spool_memory_bytes=0)
    bridge = create_server(BridgeConfig(routes={"/": f"127.0.0.1:{worker.port}"}, listen="127.0.0.1:0",
                                        http=LIMITS))
    dicoms = [i.path.read_bytes() for i in study.instances]
    state = Services(bridge=bridge, worker=worker, dicoms=dicoms)
    deadline = time.monotonic() + 30
    healthcheck = b"GET /healthcheck HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n"
    while b"READY" not in exchange(bridge.port, [healthcheck]).raw:
        assert time.monotonic() < deadline, "the bridge never became READY"
        time.sleep(0.05)
    for command in COMMANDS:  # warm: every command once, so lazily started threads exist before the baseline
        answer = exchange(bridge.port, [Request(body=body_of(dicoms, command)).encode()])
        assert [r.status for r in answer.responses] == [200], answer.raw[:500]
    state["baseline"] = settle_baseline()
    yield state
    bridge.stop(0)
    worker.stop(0)


class Services(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "<bridge and worker>"


def settle_baseline() -> tuple[int, int]:
    time.sleep(0.3)
    return threading.active_count(), open_fds()


# --------------------------------------------------------------------------------------------------
# Requests and answers on raw sockets
# --------------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: bytes = b"POST"
    target: bytes = b"/"
    version: bytes = b"HTTP/1.1"
    headers: list = field(default_factory=list)  # [(name, value)] before the generated ones
    body: bytes = b""
    content_type: bytes | None = b'multipart/related; type="application/json"; boundary="' + BOUNDARY.encode() + b'"'
    content_length: bytes | None = None  # None: the body's length
    connection: bytes | None = b"close"
    chunked: bool = False

    def encode(self) -> bytes:
        body = self.body
        head = [self.method + b" " + self.target + b" " + self.version, b"Host: bridge"]
        if self.content_type is not None:
            head.append(b"Content-Type: " + self.content_type)
        if self.chunked:
            head.append(b"Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in (body[:700], body[700:]) if c) + b"0\r\n\r\n"
        if self.content_length is not None or not self.chunked:
            head.append(b"Content-Length: " + (str(len(body)).encode() if self.content_length is None
                                               else self.content_length))
        head += [name + b": " + value for name, value in self.headers]
        if self.connection is not None:
            head.append(b"Connection: " + self.connection)
        return b"\r\n".join(head) + b"\r\n\r\n" + body


def part(content_type: bytes | None, data: bytes, boundary: bytes = BOUNDARY.encode()) -> bytes:
    headers = b"" if content_type is None else b"Content-Type: " + content_type + b"\r\n"
    return b"--" + boundary + b"\r\n" + headers + b"\r\n" + data + b"\r\n"


def body_of(dicoms: list[bytes], command: str, request_json: bytes | None = None,
            boundary: bytes = BOUNDARY.encode()) -> bytes:
    request_json = request_json if request_json is not None else json.dumps({"inference_command": command}).encode()
    parts = [part(b"application/json", request_json, boundary)]
    parts += [part(b"application/dicom", data, boundary) for data in dicoms]
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes


@dataclass
class Answer:
    raw: bytes
    responses: list[Response]
    seconds: float


class _ResponseCollector:
    """httptools callbacks: every complete response, in order."""

    def __init__(self) -> None:
        self.done: list[Response] = []
        self.current: Response | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Response(0, {}, b"")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.done.append(self.current)
        self.current = None


def exchange(port: int, pieces: list[bytes]) -> Answer:
    """Sends the pieces, then reads until the bridge closes the connection; every byte it sent, parsed."""
    started = time.monotonic()
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the bridge answered early and closed: what it sent is still readable
        sock.settimeout(max(0.1, ANSWER_WITHIN - (time.monotonic() - started)))
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                got = bytes(received[:300])
                raise AssertionError(f"no end of answer within {ANSWER_WITHIN} s; got {got!r}") from None
            if not data:
                break
            received += data
    collector = _ResponseCollector()
    try:
        collector.parser.feed_data(bytes(received))
    except httptools.HttpParserError as error:
        raise AssertionError(f"not well-formed HTTP ({error}): {bytes(received[:500])!r}") from None
    assert collector.current is None, f"an incomplete response: {bytes(received[-300:])!r}"
    return Answer(bytes(received), collector.done, time.monotonic() - started)


def is_server_refusal(response) -> bool:
    """hyper's own answer to bytes it cannot parse as HTTP/1.1 (docs/protocol.md, "Requests the HTTP server
    refuses"): 400 or 431, no body, and the connection closed. Everything it parses reaches the bridge,
    whose every refusal is JSON."""
    return (response.status in (400, 431) and response.body == b""
            and response.headers.get("connection") == "close" and "content-type" not in response.headers)


def check_answer(answer: Answer, sent: bytes) -> None:
    statuses = [r.status for r in answer.responses]
    note(f"answer statuses {statuses} in {answer.seconds:.2f} s")
    event(f"statuses {statuses}")  # --hypothesis-show-statistics tells what the mutations reached
    assert answer.seconds < ANSWER_WITHIN
    if b"\r\n\r\n" in sent or b"\n\n" in sent:
        # A head cut short is closed without an answer once the header timeout passes (hyper says nothing).
        assert answer.responses, "a request went unanswered"
    for response in answer.responses:
        if 100 <= response.status < 200:
            continue
        assert response.status < 500, (response.status, response.body[:500])
        if response.status == 200:
            if response.headers.get("content-type", "").startswith("multipart/related"):
                assert len(response.body) == int(response.headers["content-length"])
            continue
        if is_server_refusal(response):
            event("refused by the HTTP server itself")
            continue
        assert response.headers.get("content-type") == "application/json", response.headers
        error = json.loads(response.body)["error"]
        assert error["code"] and error["message"], error


# --------------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------------

METHODS = [b"POST"] * 6 + [b"GET", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"P0ST", b"post", b"TRACE"]
TARGETS = [b"/"] * 6 + [b"//", b"/?a=1", b"/%2e%2e/", b"/healthcheck", b"/metrics", b"/ping", b"*",
                        b"http://bridge/", b"/" + b"a" * 9000, b"/\x00", b"/ x"]
VERSIONS = [b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b"HTTP/9.9", b"HTTX/1.1", b""]
CONTENT_TYPES = [
    b"multipart/related; boundary=" + BOUNDARY.encode(),
    b"Multipart/Related ; boundary=\"" + BOUNDARY.encode() + b"\" ; type=application/json",
    b"multipart/form-data; boundary=" + BOUNDARY.encode(),
    b"multipart/related", b"multipart/related; boundary=", b'multipart/related; boundary=""',
    b"multipart/related; boundary=other", b"multipart/related; boundary=" + b"b" * 80,
    b"multipart/related; boundary=\"unterminated", b"multipart/related; boundary==; x", b"application/json",
    b"text/plain", b"application/dicom", b"", b";;;", b"multipart/related; boundary=\xff\xfe",
]
CONTENT_LENGTHS = [None] * 8 + [b"0", b"1", b"-1", b"abc", b"99999999999999999999", b" 5", b"0x10", b"1e3"]
SPECIAL_INSERTS = [b"\r\n", b"\n", b"--", b"\r\n\r\n", b"\r\n--" + BOUNDARY.encode() + b"\r\n",
                   b"\r\n--" + BOUNDARY.encode() + b"--\r\n", b"Content-Type: application/dicom\r\n", b"\x00",
                   b"DICM", b"\xff" * 8]
header_names = st.one_of(st.sampled_from([b"X-Thing", b"Content-Length", b"Transfer-Encoding", b"Expect",
                                          b"Content-Type", b"Connection", b"Upgrade", b"X-Request-Id", b"Host"]),
                         st.binary(min_size=1, max_size=12))
header_values = st.one_of(st.sampled_from([b"chunked", b"100-continue", b"keep-alive", b"h2c", b"gzip, chunked",
                                           b"12", b"x" * 70000]),
                          st.binary(max_size=40))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def mutate_bytes(data: st.DataObject, body: bytes) -> bytes:
    """0 to 3 byte-level damages: flips, deletions, insertions, duplications, truncation."""
    for _ in range(data.draw(st.integers(0, 3), label="damages")):
        if not body:
            break
        kind = data.draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate"]), label="damage")
        at = data.draw(st.integers(0, len(body) - 1), label="at")
        if kind == "flip":
            body = body[:at] + bytes([data.draw(st.integers(0, 255))]) + body[at + 1:]
        elif kind == "delete":
            body = body[:at] + body[at + data.draw(st.integers(1, 64)):]
        elif kind == "insert":
            extra = data.draw(st.sampled_from(SPECIAL_INSERTS) | st.binary(min_size=1, max_size=32), label="insert")
            body = body[:at] + extra + body[at:]
        elif kind == "duplicate":
            body = body[:at] + body[at:at + 200] + body[at:]
        else:
            body = body[:at]
    return body


def draw_body(data: st.DataObject, dicoms: list[bytes], damaged: bool) -> bytes:
    command = data.draw(st.sampled_from(COMMANDS + ["get-nothing", ""]), label="command")
    if not damaged:
        return body_of(dicoms, command)
    request_json = None
    kind = data.draw(st.sampled_from(["bytes", "json", "json bytes", "dicom", "parts"]), label="body change")
    if kind == "json":
        request_json = json.dumps(data.draw(json_values, label="request json")).encode()
    elif kind == "json bytes":
        request_json = data.draw(st.binary(max_size=64), label="request json bytes")
    body_dicoms = list(dicoms)
    if kind == "dicom":  # one DICOM file damaged where pydicom looks: preamble, magic, header, pixels
        index = data.draw(st.integers(0, len(dicoms) - 1))
        body_dicoms[index] = mutate_bytes(data, dicoms[index])
    body = body_of(body_dicoms, command, request_json)
    if kind == "parts":  # part headers and order
        content_type = data.draw(st.sampled_from([None, b"text/plain", b"application/dicom", b"application/json",
                                                  b"\x01", b"application/dicom; x=\"y"]), label="part type")
        parts = [part(content_type, body_dicoms[0]), part(b"application/json", b"{}")]
        if data.draw(st.booleans(), label="json first"):
            parts.reverse()
        body = b"".join(parts) + b"--" + BOUNDARY.encode() + data.draw(st.sampled_from([b"--\r\n", b"", b"\r\n"]))
    return mutate_bytes(data, body) if kind == "bytes" else body


# Each example damages one area of the request (sometimes a second one), so that most reach past the
# request line into the body, the multipart parser, the worker and the model.
AREAS = ["line", "headers", "framing", "body", "body", "body", "pipelined", "extra", "raw", "none"]


def draw_request(data: st.DataObject, dicoms: list[bytes]) -> bytes:
    areas = {data.draw(st.sampled_from(AREAS), label="area")}
    if data.draw(st.integers(0, 3), label="second area") == 0:
        areas.add(data.draw(st.sampled_from(AREAS), label="area 2"))
    request = Request(body=draw_body(data, dicoms, damaged="body" in areas))
    if "line" in areas:
        request.method = data.draw(st.sampled_from(METHODS), label="method")
        request.target = data.draw(st.sampled_from(TARGETS), label="target")
        request.version = data.draw(st.sampled_from(VERSIONS), label="version")
    if "headers" in areas:
        request.content_type = data.draw(st.sampled_from([request.content_type, *CONTENT_TYPES]), label="type")
        request.headers = data.draw(st.lists(st.tuples(header_names, header_values), max_size=3), label="headers")
        if data.draw(st.integers(0, 9), label="many headers") == 0:
            request.headers += [(b"X-N%d" % i, b"v") for i in range(120)]
    if "framing" in areas:
        request.content_length = data.draw(st.sampled_from(CONTENT_LENGTHS), label="length")
        if request.content_length is None and data.draw(st.booleans(), label="length off"):
            request.content_length = str(len(request.body) + data.draw(st.integers(-20, 20))).encode()
        request.chunked = data.draw(st.booleans(), label="chunked")
    if "pipelined" in areas:
        request.connection = b"keep-alive"
    raw = request.encode()
    if "pipelined" in areas:
        raw += PING
    if "extra" in areas:
        raw += data.draw(st.binary(min_size=1, max_size=64), label="extra bytes")
    if "raw" in areas:
        raw = mutate_bytes(data, raw)
    return raw


def split(data: st.DataObject, raw: bytes) -> list[bytes]:
    cuts = sorted(data.draw(st.lists(st.integers(0, max(len(raw), 1)), max_size=6), label="cuts"))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True) if raw[a:b]]


# --------------------------------------------------------------------------------------------------
# The properties
# --------------------------------------------------------------------------------------------------

FUZZ_SETTINGS = dict(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])


@settings(max_examples=examples(150), **FUZZ_SETTINGS)
@given(data=st.data())
def test_mutated_requests_get_well_formed_answers_and_never_a_5xx(services, data):
    raw = draw_request(data, services["dicoms"])
    note(f"request ({len(raw)} bytes): {raw[:400]!r}")
    check_answer(exchange(services["bridge"].port, split(data, raw)), raw)


@settings(max_examples=examples(40), **FUZZ_SETTINGS)
@given(data=st.data())
def test_random_boundaries_parse_as_the_same_request(services, data):
    """A valid request with any RFC 2046 boundary is answered 200, quoted or not (when allowed unquoted)."""
    chars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
    boundary = data.draw(st.text(chars, min_size=1, max_size=69), label="boundary") + data.draw(
        st.sampled_from(chars[:-1]), label="last")
    body = body_of(services["dicoms"], "get-bounding-box-2d", boundary=boundary.encode())
    request = Request(body=body, content_type=b'multipart/related; boundary="' + boundary.encode() + b'"')
    answer = exchange(services["bridge"].port, split(data, request.encode()))
    check_answer(answer, request.encode())
    assert [r.status for r in answer.responses] == [200], answer.raw[:500]


def test_the_bridge_is_back_to_its_baseline(services):
    """Runs after the properties above (pytest keeps file order): nothing leaked, still serving."""
    answer = exchange(services["bridge"].port, [PING])
    assert [r.status for r in answer.responses] == [200]
    threads, fds = services["baseline"]
    deadline = time.monotonic() + 10
    while True:
        now = (threading.active_count(), open_fds(), spool_entries(services["worker"]))
        if now[0] <= threads and now[1] <= fds and not now[2]:
            break
        assert time.monotonic() < deadline, f"threads, fds, spool now {now}; before {threads}, {fds}, []"
        time.sleep(0.1)

"""The bridge's HTTP front against RFC 9112 and a hostile client: a real bridge process (granian + our ASGI
middleware) in front of a real mock-model worker, spoken to over raw sockets.

Each test is one row of what a review against the RFC found in the server the bridge had before
(docs/decisions.md): pipelined floods, trailers, upgrades, request targets, early answers, Host, methods.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests import http_helpers as http
from tests.dicom_factory import write_standard_study
from tests.hostile import (
    aborted_uploads,
    one_byte_chunk_upload,
    pipelined_flood,
    send_and_read,
    tls_connection_flood,
)
from tests.services import reported_port, spawn, start_bridge, start_worker, wait_for

TOKEN = "front-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("front") / "study")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("front-stack")
    worker = start_worker(tmp, "mock_model")
    bridge = start_bridge(tmp, worker.address)
    yield {"worker": worker, "bridge": bridge, "port": bridge.port}
    bridge.stop()
    worker.stop()


def rss_kb(service) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{service.process.pid}/status").read_text())[1])


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Sends `data`, then reads until the bridge closes the connection (or `timeout` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


def json_error(answer: bytes) -> dict:
    return json.loads(answer[answer.index(b"\r\n\r\n") + 4:])["error"]


def head_of(answer: bytes) -> str:
    return answer[: answer.index(b"\r\n\r\n")].decode("latin-1").lower()


# ----------------------------------------------------------------------------------------- memory


def test_a_pipelined_flood_never_read_leaves_the_bridge_as_it_was(stack):
    """4 MB of pipelined GET /healthz whose answers are never read: requests are parsed one at a time, as
    their answers leave, so nothing queues (a server that queues them holds all 77,864: +139 MB)."""
    bridge = stack["bridge"]
    exchange(stack["port"], b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    before = rss_kb(bridge)
    with pipelined_flood(stack["port"], b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 4 << 20) as flood:
        time.sleep(1)
        during = rss_kb(bridge)
    time.sleep(1)
    after = rss_kb(bridge)
    assert max(during, after) - before < 10_000, (before, during, after, flood["sent"])
    assert statuses(exchange(stack["port"], b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) \
        == [200]


@pytest.mark.quiet
def test_aborted_uploads_do_not_raise_the_bridges_memory(stack):
    """Headers announcing 30 MB, about 1.7 MB sent, then the client leaves, 4,000 times: one of the last three
    thousands adds at most 5 MB (what an abandoned body leaks would show in each: 48 -> 163 MB over 480 with an
    HTTP server that kept them, docs/decisions.md), and all four at most 125 MB. On a quiet machine a fresh
    bridge goes 56 -> 83-86 MB (12 runs of 12), but about one run in four under heavy load keeps 34-38 MB more,
    live in a glibc arena of a native thread (not Python objects; malloc_trim frees none of it), once only: it
    grows during one thousand, or is split over two (runs alone: +48 MB then +21 MB; a fresh-clone run: +63 MB
    then +5.9 MB; hence the least of the last three rises, not the second alone). Even alone, right after the
    parallel suite, a fresh bridge once went 59 -> 152 MB (then +1 MB), hence 125 MB, not 80: issue 17's deliver
    4 (under 100 MB) is not met in those runs, and the note says so. docs/security.md says so too. `make test`
    runs it alone, after the other tests (the `quiet` mark)."""
    bridge = stack["bridge"]

    def settled() -> bool:
        text = urllib.request.urlopen(f"http://127.0.0.1:{stack['port']}/metrics", timeout=5).read().decode()
        return "bridge_inflight_requests 0.0" in text

    wait_for(settled, timeout=30, what="the bridge settled")
    levels = [settle_rss(bridge)]
    for _ in range(4):
        aborted_uploads(stack["port"], 1000)
        wait_for(settled, timeout=30, what="the aborted uploads settled")
        levels.append(settle_rss(bridge))
    rises = [after - before for before, after in itertools.pairwise(levels)]
    # A leak adds to every thousand; the arena's one-time growth (above) to one, sometimes split over two.
    assert min(rises[1:]) < 5_000, (levels, rises)
    assert levels[-1] - levels[0] < 125_000, (levels, rises)


# -------------------------------------------------------------------------------------- RFC 9112


def test_a_trailer_never_reaches_the_application_as_a_header(tmp_path):
    """A chunked request's trailer fields are not headers: a token in a trailer does not authenticate."""
    worker = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, worker.address, env={"BRIDGE_TOKENS": TOKEN})
    try:
        answer = exchange(bridge.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                       b"Content-Type: application/json\r\nConnection: close\r\n\r\n"
                                       b"2\r\n{}\r\n0\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
                                       b"Content-Type: text/x-from-trailer\r\n\r\n")
        assert statuses(answer) == [401] and json_error(answer)["code"] == "unauthorized"
        assert b"x-from-trailer" not in answer
    finally:
        bridge.stop()
        worker.stop()


def test_an_upgrade_request_is_answered_and_the_connection_then_closes(stack):
    """h2c is not offered: the request is answered in HTTP/1.1 with Connection: close, and the connection
    closes at once instead of hanging, unread, until an idle timeout."""
    started = time.monotonic()
    answer = exchange(stack["port"], b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                                     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [200] and "connection: close" in head_of(answer)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("target", [b"CONNECT 127.0.0.1:50051", b"*", b"example.com:80"])
def test_a_request_target_that_is_not_a_path_is_a_400(stack, target):
    line = target + b" HTTP/1.1" if target.startswith(b"CONNECT") else b"GET " + target + b" HTTP/1.1"
    answer = exchange(stack["port"], line + b"\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [400], answer[:300]
    assert "Traceback" not in stack["bridge"].log()


def test_an_absolute_form_target_is_served_as_its_path(stack):
    """RFC 9110, 4.2.3: an empty path is "/" (http://x is http://x/, which takes POST only: a 405 in JSON),
    never a 500 with a traceback."""
    answer = exchange(stack["port"], b"GET http://bridge.example/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [200] and answer.endswith(b"accepting connections")
    answer = exchange(stack["port"], b"GET http://x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [405] and json_error(answer)["code"] == "method_not_allowed"
    assert "Traceback" not in stack["bridge"].log()


@pytest.mark.parametrize("closing", [b"POST / HTTP/1.1\r\nConnection: close\r\n", b"POST / HTTP/1.0\r\n",
                                     b"POST / HTTP/1.1\r\n"])
def test_an_early_answer_reaches_a_client_that_keeps_sending(stack, closing):
    """A 30 MB upload refused from its headers (415): the client sends all of it without an error and then
    reads the answer, which says Connection: close."""
    with socket.create_connection(("127.0.0.1", stack["port"]), timeout=20) as sock:
        sock.sendall(closing + b"Host: x\r\nContent-Type: text/plain\r\nContent-Length: 31457280\r\n\r\n")
        for _ in range(480):
            sock.sendall(b"a" * 65536)  # raises if the bridge resets the connection
        answer = read_until_closed(sock, 10)
    assert statuses(answer) == [415] and "connection: close" in head_of(answer)
    assert json_error(answer)["code"] == "unsupported_media_type"


def test_an_early_answer_to_expect_100_continue_says_it_closes(stack):
    """... and closes soon: the client need not send the body it announced (it was held for 20 s)."""
    started = time.monotonic()
    answer = exchange(stack["port"], b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                                     b"Expect: 100-continue\r\nContent-Length: 1000000\r\n\r\n", timeout=15)
    assert statuses(answer) == [415] and "connection: close" in head_of(answer)
    assert time.monotonic() - started < 10, "the connection stayed open waiting for a body nobody asked for"


def test_100_continue_goes_to_http_1_1_clients_only(stack):
    """The inference route reads the body, so the server sends 100 Continue, but never to HTTP/1.0."""
    request = (b"POST / %s\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2\r\n\r\n")
    for version, expected in ((b"HTTP/1.1", True), (b"HTTP/1.0", False)):
        with socket.create_connection(("127.0.0.1", stack["port"]), timeout=5) as sock:
            sock.sendall(request % version)
            sock.settimeout(1)
            try:
                first = sock.recv(100)
            except TimeoutError:
                first = b""
            assert first.startswith(b"HTTP/1.1 100") is expected, (version, first)
            sock.sendall(b"{}")
            assert statuses(first + read_until_closed(sock, 3))[-1] == 400  # no studyPath: the body was read


@pytest.mark.parametrize("hosts", [b"", b"Host:\r\n", b"Host: a\r\nHost: b\r\n"])
def test_a_missing_or_repeated_host_is_a_400(stack, hosts):
    answer = exchange(stack["port"], b"GET /ping HTTP/1.1\r\n" + hosts + b"\r\n")
    assert statuses(answer) == [400] and "host" in json_error(answer)["message"].lower()
    assert "connection: close" in head_of(answer)


def test_an_http_1_0_request_needs_no_host(stack):
    assert statuses(exchange(stack["port"], b"GET /ping HTTP/1.0\r\n\r\n")) == [200]


def test_transfer_codings_other_than_chunked_are_refused(stack):
    answer = exchange(stack["port"], b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                                     b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert statuses(answer) == [501] and json_error(answer)["code"] == "not_implemented"
    # HTTP/1.0 has no Transfer-Encoding: its framing cannot be trusted (RFC 9112, 6.1).
    answer = exchange(stack["port"], b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert statuses(answer) == [400]


def test_an_http_2_request_line_is_not_served_as_http_1(stack):
    assert statuses(exchange(stack["port"], b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n")) == [400]


@pytest.mark.parametrize(("path", "method", "allowed"), [
    ("/", "GET", "POST"), ("/metrics", "POST", "GET, HEAD"), ("/ping", "PUT", "GET, HEAD, POST")])
def test_a_405_says_which_methods_are_allowed(stack, path, method, allowed):
    answer = exchange(stack["port"], f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                     f"Content-Length: 0\r\n\r\n".encode())
    assert statuses(answer) == [405] and f"allow: {allowed.lower()}" in head_of(answer)


@pytest.mark.parametrize("path", ["/ping", "/healthcheck", "/healthz", "/readyz", "/metrics"])
def test_head_works_wherever_get_does(stack, path):
    get = exchange(stack["port"], f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = exchange(stack["port"], f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert statuses(head) == statuses(get) and head.endswith(b"\r\n\r\n"), head[-200:]


def test_many_headers_or_a_long_target_are_refused_with_json(stack):
    answer = exchange(stack["port"], b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n")
    assert statuses(answer) == [431] and json_error(answer)["code"] == "request_header_fields_too_large"
    answer = exchange(stack["port"], b"GET /" + b"a" * (9 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [414] and json_error(answer)["code"] == "uri_too_long"


def test_a_keep_alive_connection_serves_requests_one_after_another(stack, study):
    """Three requests on one connection, an inference between two probes: each answered in order."""
    body = http.hand_built_body([("application/json", b'{"inference_command": "get-bounding-box-2d"}'),
                                 ("application/dicom", study.instances[0].path.read_bytes())], "b")
    ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(stack["port"], ping + http.raw_post_head(body) + body + ping.replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert statuses(answer) == [200, 200, 200]


# ------------------------------------------------------------------- floods (issue: hostile clients, round two)


def settle_rss(service, seconds: float = 4.0) -> int:
    """RSS once the process has had a moment of idleness to give memory back (jemalloc decays within 1 s,
    glibc is trimmed 1 s after the last request)."""
    time.sleep(seconds)
    return rss_kb(service)


def test_a_flood_of_tls_connections_that_never_finish_leaves_memory_as_it_was(tmp_path):
    """Connections to the HTTPS port left silent or with half a ClientHello, 3,000 at a time, closed,
    repeated: memory returns to within 10% of its level before (a TLS stack that keeps what a handshake
    allocated went 52 -> 867 MB for good, docs/decisions.md)."""
    import ssl

    from tests.certificates import make_pki

    pki = make_pki(tmp_path / "pki")
    worker = start_worker(tmp_path, "mock_model")
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge", "--worker", worker.address, "--listen", "127.0.0.1:0",
                                        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)], 0)
    bridge.port = reported_port(bridge, 60)
    context = ssl.create_default_context(cafile=str(pki.ca))

    def healthz() -> int:
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return statuses(read_until_closed(tls, 10))[0]

    try:
        wait_for(lambda: healthz() == 200, timeout=60, what="the HTTPS bridge answering")
        tls_connection_flood(bridge.port)  # warm-up: the allocators' working size
        before = settle_rss(bridge)
        for _ in range(4):
            tls_connection_flood(bridge.port)
        after = settle_rss(bridge)
        assert after < before * 1.1, (before, after)
        assert healthz() == 200
    finally:
        bridge.stop()
        worker.stop()


def test_a_pipelined_flood_without_a_token_leaves_memory_as_it_was(tmp_path):
    """With tokens on, 15 MB of pipelined unauthenticated GET /metrics never read leave memory flat (queued,
    they took a server from 66 to 554 MB), while a probe on another connection is answered."""
    worker = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, worker.address, env={"BRIDGE_TOKENS": TOKEN})
    try:
        exchange(bridge.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        before = settle_rss(bridge)
        with pipelined_flood(bridge.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 15 << 20) as flood:
            assert flood["sent"] < 15 << 20  # the bridge read no further than the answers it could send
            started = time.monotonic()
            assert statuses(exchange(bridge.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))\
                == [200]
            assert time.monotonic() - started < 2
        after = settle_rss(bridge)
        assert after < before * 1.1, (before, after, flood["sent"])
    finally:
        bridge.stop()
        worker.stop()


def test_one_byte_chunks_cost_little_and_delay_no_one(stack):
    """A 1 MB attachment sent as 1-byte chunks (6 MB on the wire): probes on other connections are answered
    within 2 s throughout (a server that parses on its one loop thread made them wait 16.9 s), and the upload
    ends with an answer (200, or 408 when the chunks arrive slower than the minimum upload rate)."""
    waits, done = [], threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.monotonic()
            exchange(stack["port"], b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            waits.append(time.monotonic() - started)
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        answer = send_and_read(stack["port"], one_byte_chunk_upload())
    finally:
        done.set()
        prober.join()
    assert statuses(answer)[:1] in ([200], [408]), answer[:200]
    assert waits and max(waits) < 2, max(waits)

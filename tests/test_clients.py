"""Who a client is and what one client may hold (bridge/clients.py), with ASGI messages made here, and the
same limits against a real bridge process."""

from __future__ import annotations

import asyncio
import socket

import pytest
import requests

from bridge import clients
from bridge.clients import ClientLimits, ForwardedFor, forwarded_client
from bridge.config import parse_networks
from tests.services import start_bridge, start_worker

TRUSTED = parse_networks("10.0.0.0/8, 192.168.1.7")


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not a trusted proxy: its header is not believed
    ("10.1.2.3", "1.2.3.4", "1.2.3.4"),
    ("10.1.2.3", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the left part is the client's own writing
    ("10.1.2.3", "1.2.3.4, 10.9.9.9", "1.2.3.4"),  # two proxies of ours
    ("192.168.1.7", "2001:db8::1", "2001:db8::1"),
    ("10.1.2.3", "", "10.1.2.3"),
    ("10.1.2.3", "10.0.0.1, 10.0.0.2", "10.1.2.3"),  # only proxies: the peer
    ("10.1.2.3", "not-an-address", "10.1.2.3"),
    ("10.1.2.3", "1.2.3.4:5678", "1.2.3.4"),  # hops as some proxies write them: with a port,
    ("10.1.2.3", "[2001:db8::7]:443", "2001:db8::7"),  # an IPv6 address in brackets, with one
    ("10.1.2.3", "[2001:db8::7]", "2001:db8::7"),
    ("10.1.2.3", "1.2.3.4, 10.0.0.5:80", "1.2.3.4"),  # a trusted proxy's hop with a port is still trusted
    ("10.1.2.3", "1.2.3.4, unknown", "10.1.2.3"),
])
def test_the_client_behind_trusted_proxies(peer, forwarded, client):
    assert forwarded_client(peer, forwarded, TRUSTED) == client


def test_no_trusted_proxy_means_the_header_is_ignored():
    assert forwarded_client("10.1.2.3", "1.2.3.4", ()) == "10.1.2.3"


def test_a_bad_trusted_proxy_entry_is_named():
    with pytest.raises(ValueError, match="'proxy.example'"):
        parse_networks("10.0.0.0/8 proxy.example")


def scope(address="1.2.3.4", body=True, forwarded=None) -> dict:
    headers = [(b"host", b"x")] + ([(b"content-length", b"10")] if body else [])
    if forwarded:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    return {"type": "http", "http_version": "1.1", "method": "POST", "path": "/", "raw_path": b"/",
            "query_string": b"", "headers": headers, "client": (address, 5555)}


class Sent(list):
    async def __call__(self, message):
        self.append(message)


def test_forwarded_for_replaces_the_scope_client():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"][0])

    asyncio.run(ForwardedFor(app, TRUSTED)(scope("10.0.0.1", forwarded="1.2.3.4"), None, Sent()))
    assert seen == ["1.2.3.4"]


def test_every_x_forwarded_for_line_counts_in_order():
    """Two header lines are one list: reading only the first believed the line the client wrote itself."""
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"][0])

    two_lines = scope("10.0.0.1", forwarded="6.6.6.6")
    two_lines["headers"].append((b"x-forwarded-for", b"1.2.3.4, 10.0.0.9"))
    asyncio.run(ForwardedFor(app, TRUSTED)(two_lines, None, Sent()))
    assert seen == ["1.2.3.4"]


def test_uploads_beyond_the_limit_from_one_address_get_429_until_one_has_arrived():
    async def scenario():
        release = asyncio.Event()

        async def app(scope, receive, send):
            await receive()  # the body's first piece...
            await release.wait()
            await receive()  # ...and its last
            await send({"type": "http.response.start", "status": 200, "headers": []})

        pieces = {}

        def receive_for(key):
            async def receive():
                pieces[key] = pieces.get(key, 0) + 1
                return {"type": "http.request", "body": b"x", "more_body": pieces[key] < 2}
            return receive

        reasons = []
        limited = ClientLimits(app, max_uploads=2, auth_failures=5, on_reject=reasons.append)
        first = asyncio.ensure_future(limited(scope(), receive_for(1), Sent()))
        second = asyncio.ensure_future(limited(scope(), receive_for(2), Sent()))
        await asyncio.sleep(0.01)
        refused, other = Sent(), Sent()
        await limited(scope(), receive_for(3), refused)
        other_task = asyncio.ensure_future(limited(scope("5.6.7.8"), receive_for(4), other))
        await asyncio.sleep(0.01)
        assert refused[0]["status"] == 429 and b"--max-uploads-per-client" in refused[1]["body"]
        assert reasons == ["uploads_per_client"]
        release.set()
        await asyncio.gather(first, second, other_task)
        assert other[0]["status"] == 200  # another address was never limited
        assert limited.uploading == {}
        again = Sent()
        await limited(scope(), receive_for(5), again)
        assert again[0]["status"] == 200

    asyncio.run(scenario())


def test_refused_tokens_beyond_the_limit_get_429_with_retry_after_for_that_address_only():
    now = [1000.0]

    async def app(scope, receive, send):
        status = 200 if dict(scope["headers"]).get(b"authorization") == b"Bearer good" else 401
        await send({"type": "http.response.start", "status": status, "headers": []})

    def guess(address, token=b"Bearer bad") -> int:
        sent = Sent()
        request = scope(address, body=False)
        request["headers"].append((b"authorization", token))
        asyncio.run(limited(request, None, sent))
        return sent[0]["status"]

    limited = ClientLimits(app, max_uploads=8, auth_failures=3, on_reject=lambda reason: None,
                           clock=lambda: now[0])
    assert [guess("1.2.3.4") for _ in range(3)] == [401, 401, 401]
    sent = Sent()
    asyncio.run(limited(scope("1.2.3.4", body=False), None, sent))
    assert sent[0]["status"] == 429 and (b"retry-after", b"60") in sent[0]["headers"]
    assert guess("1.2.3.4", b"Bearer good") == 429  # even a good token waits: the address is guessing
    assert guess("9.9.9.9", b"Bearer good") == 200 and guess("9.9.9.9") == 401
    now[0] += 60
    assert guess("1.2.3.4", b"Bearer good") == 200


def test_the_tables_are_bounded(monkeypatch):
    monkeypatch.setattr(clients, "MAX_TRACKED", 5)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 401, "headers": []})

    limited = ClientLimits(app, max_uploads=8, auth_failures=3, on_reject=lambda reason: None)
    for index in range(20):
        request = scope(f"10.0.0.{index}", body=False)
        request["headers"].append((b"authorization", b"Bearer wrong"))
        asyncio.run(limited(request, None, Sent()))
    assert len(limited.failures) == 5


def test_a_real_bridge_limits_token_guessing_and_logs_who(tmp_path):
    worker = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, worker.address, "--auth-failures-per-minute", "5",
                          env={"BRIDGE_TOKENS": "a-valid-token-of-some-length-0123"})
    try:
        session = requests.Session()
        codes = [session.get(f"http://{bridge.address}/metrics", headers={"Authorization": f"Bearer guess{n}"},
                             timeout=10).status_code for n in range(8)]
        assert codes == [401] * 5 + [429] * 3
        last = session.get(f"http://{bridge.address}/metrics", timeout=10)
        assert last.status_code == 429 and int(last.headers["Retry-After"]) > 0
        assert last.json()["error"]["code"] == "too_many_requests"
        log = bridge.log()
        assert "-> 401" in log and "from 127.0.0.1" in log and "127.0.0.1:" in log.split("-> 429")[0][-200:]
        # Probes stay open: a pod is never restarted because someone guessed tokens.
        assert session.get(f"http://{bridge.address}/healthz", timeout=10).status_code == 200
    finally:
        bridge.stop()
        worker.stop()


def test_a_real_bridge_refuses_uploads_beyond_the_per_client_limit(tmp_path):
    worker = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, worker.address, "--max-uploads-per-client", "2")
    held = []
    try:
        head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary=b\r\n"
                b"Content-Length: 1000000\r\n\r\n--b\r\n")
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
            sock.sendall(head)
            held.append(sock)
        response = requests.post(f"http://{bridge.address}/", data=b"--b--\r\n", timeout=10,
                                 headers={"Content-Type": "multipart/related; boundary=b"})
        assert response.status_code == 429 and "--max-uploads-per-client" in response.json()["error"]["message"]
        assert response.headers["Retry-After"]
    finally:
        for sock in held:
            sock.close()
        bridge.stop()
        worker.stop()

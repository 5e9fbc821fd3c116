"""The stall attacks of the adversarial pass, repeated against real processes with default settings, and how
long a valid request (and /ping) took while each was going on.

    .venv/bin/python -m benchmarks.attacks

Attacks: 200 idle TCP connections; 50 slowloris clients (a header byte every 100 ms); 5 clients uploading
1 MiB fast then a byte a second; 5 clients asking for a 16 MiB mask and never reading it; 20 gRPC streams
sent straight to the worker that stop after their first part. With the default timeouts (10 s for headers,
20 s rate windows, 30 s to send, 30 s idle streams) the attackers are cut off well after the measurement;
what matters is that nobody else waits for them.
"""

from __future__ import annotations

import itertools
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import requests

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import start_bridge, start_worker


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@contextmanager
def idle_connections(port: int, count: int = 200):
    socks = [connect(port) for _ in range(count)]
    try:
        yield f"{count} idle connections"
    finally:
        for sock in socks:
            sock.close()


@contextmanager
def trickling(socks: list[socket.socket], stream: Iterator[bytes], every: float, label: str):
    """Sends the next byte of `stream` on every socket each `every` seconds until the block ends, then
    closes them all: the one mechanism behind the slow attacks."""
    stop = threading.Event()

    def trickle() -> None:
        for byte in stream:
            if stop.wait(every):
                return
            for sock in socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield label
    finally:
        stop.set()
        thread.join()
        for sock in socks:
            sock.close()


def slowloris(port: int, count: int = 50):
    line = b"POST / HTTP/1.1\r\nX-Slow: yes\r\n"
    endless = (line[i % len(line):i % len(line) + 1] for i in itertools.count())
    return trickling([connect(port) for _ in range(count)], endless, 0.1, f"{count} slowloris clients")


def multipart_request(paths: list[Path], command: str = "get-bounding-box-2d") -> tuple[bytes, bytes]:
    parts = [("application/json", json.dumps({"inference_command": command}).encode())]
    parts += [("application/dicom", p.read_bytes()) for p in paths]
    body = http.hand_built_body(parts, "b")
    return http.raw_post_head(body), body


def slow_uploads(port: int, paths: list[Path], count: int = 5):
    head, body = multipart_request(paths)
    socks = []
    for _ in range(count):
        sock = connect(port)
        sock.sendall(head + body[: 1 << 20])
        socks.append(sock)
    rest = (body[offset:offset + 1] for offset in range(1 << 20, len(body)))
    return trickling(socks, rest, 1.0, f"{count} uploads of 1 MiB then 1 byte/s")


@contextmanager
def unread_answers(port: int, paths: list[Path], count: int = 5):
    head, body = multipart_request(paths, "get-probability-mask")
    socks = []
    for _ in range(count):
        sock = connect(port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head + body)
        socks.append(sock)
    time.sleep(2)  # let the model answer them
    try:
        yield f"{count} clients never reading a 16 MiB mask"
    finally:
        for sock in socks:
            sock.close()


@contextmanager
def silent_streams(worker_address: str, paths: list[Path], count: int = 20):
    channel = grpc.insecure_channel(worker_address)
    stop = threading.Event()
    data = paths[0].read_bytes()

    def messages():
        yield pb.InferRequest(header=pb.RequestHeader(request_json=b"{}"))
        yield pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_DICOM, content_type="application/dicom"))
        yield pb.InferRequest(chunk=data[:1000])
        stop.wait(120)

    calls = [pb_grpc.InferenceStub(channel).Infer(messages(), timeout=120) for _ in range(count)]

    def drain(call) -> None:
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass  # cancelled when the measurement is over

    threads = [threading.Thread(target=drain, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    time.sleep(1)
    try:
        yield f"{count} gRPC streams to the worker that stop after a part"
    finally:
        stop.set()
        for call in calls:
            call.cancel()
        channel.close()


def measure(url: str, small: list[Path]) -> tuple[float, float, int]:
    started = time.monotonic()
    ping = requests.get(url + "/ping", timeout=120)
    ping_seconds = time.monotonic() - started
    started = time.monotonic()
    response = http.post_like_original_tool(url + "/", {}, small, timeout=120)
    return ping_seconds, time.monotonic() - started, response.status_code if ping.status_code == 200 else 0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="attacks-") as name:
        tmp = Path(name)
        small = [i.path for i in write_study(tmp / "small", [SeriesSpec("s", rows=512, cols=512, count=1)]).instances]
        big = [i.path for i in write_study(tmp / "big", [SeriesSpec("b", rows=512, cols=512, count=64)]).instances]
        worker = start_worker(tmp, "mock_model")
        bridge = start_bridge(tmp, worker.address)
        url = f"http://{bridge.address}"
        attacks = [
            ("none", lambda: contextmanager(lambda: (yield "no attack"))()),
            ("idle", lambda: idle_connections(bridge.port)),
            ("slowloris", lambda: slowloris(bridge.port)),
            ("slow uploads", lambda: slow_uploads(bridge.port, big)),
            ("unread answers", lambda: unread_answers(bridge.port, big)),
            ("silent gRPC streams", lambda: silent_streams(worker.address, big)),
        ]
        print(f"{'attack':55} | /ping s | valid request s | status")
        try:
            for _, attack in attacks:
                with attack() as description:
                    ping, request, status = measure(url, small)
                print(f"{description:55} | {ping:7.3f} | {request:15.3f} | {status}", flush=True)
        finally:
            bridge.stop()
            worker.stop()


if __name__ == "__main__":
    main()

"""The attacks of both adversarial passes, repeated against real processes with default settings: how long a
valid request (and /ping) took while each was going on, and the RSS of the bridge and the worker before the
attack, during it and once it had ended. docs/security.md ("Hostile clients, measured") holds a run.

    .venv/bin/python -m benchmarks.attacks

Round one (stalls): 200 idle TCP connections; 50 slowloris clients (a header byte every 100 ms); 5 clients
uploading 1 MiB fast then a byte a second; 5 clients asking for a 16 MiB mask and never reading it; 20 gRPC
streams sent straight to the worker that stop after their first part. With the default timeouts the
attackers are cut off well after the measurement: what matters is that nobody else waits for them.

Round two (issue 18, the worker's rows; the mechanisms are in tests/hostile.py): 130 uploads from 130
addresses declaring 4 GiB and sending 1.4 MB every 19 s (row 4; the issue's 1.3 MB falls short of the
minimum rate in a 20 s window holding one burst, and the bridge cuts it after 40 s); 130 gRPC streams
trickling a byte every 20 s (row 5); 400,000 one-byte chunk messages on one stream (row 9); and one-shot
inputs whose answer is the result (rows 6, 7, 8, 12, 14, 16): what came back, what the logs got.

The bridge's HTTP front (issues 17 and 18, rows 1-3, 11, 17): 15 MB of pipelined GET /healthz never read;
a 1 MB attachment in one-byte HTTP chunks; 1,000 aborted uploads (30 MB declared, 1.7 MB sent); on a bridge
with HTTPS and tokens, 3,000 TLS connections left silent or with half a ClientHello, five times; 15 MB of
pipelined unauthenticated GET /metrics; 3,000 wrong tokens on one connection; a missing and a doubled Host.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pydicom
import requests
import trustme

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from contract import wire
from mock_model.model import MockModel
from tests import http_helpers as http
from tests.certificates import make_pki
from tests.dicom_factory import SeriesSpec, write_big_study, write_study
from tests.hostile import (
    aborted_uploads,
    handshake_flood,
    in_background,
    one_byte_chunk_upload,
    one_byte_chunks,
    pipelined_flood,
    rss,
    send_and_read,
    slow_uploads,
    tls_connection_flood,
    trickling_streams,
)
from tests.services import Service, free_port, reported_port, spawn, start_bridge, start_worker, wait_for

SETTLE_SECONDS = 3.0  # once nothing is in flight: the worker's idle trim (1 s) and the bridge's cleanup


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
    closes them all: the one mechanism behind the slow attacks of round one."""

    def trickle(stop: threading.Event) -> None:
        for byte in stream:
            if stop.wait(every):
                return
            for sock in socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass

    try:
        with in_background(trickle):
            yield label
    finally:
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


def slow_small_uploads(port: int, paths: list[Path], count: int = 5):
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


@contextmanager
def crowd_of_slow_uploads(port: int):
    with slow_uploads(port) as description:
        time.sleep(5)  # admitted and their first 1.4 MB through
        yield description


@contextmanager
def crowd_of_trickling_streams(address: str):
    with trickling_streams(address) as outcome:
        time.sleep(3)
        yield outcome["description"]


@contextmanager
def many_one_byte_chunks(address: str):
    with one_byte_chunks(address) as outcome:
        time.sleep(5)
        yield outcome["description"]
        outcome["done"].wait(120)


# ------------------------------------------------------------------------------------------ measuring


@contextmanager
def pipelined_healthz(port: int):
    with pipelined_flood(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 15 << 20) as flood:
        yield f"15 MB of pipelined GET /healthz, never read (row 2): the bridge took {flood['sent'] >> 10:,} KiB"


@contextmanager
def one_byte_http_chunks(port: int):
    outcome = {}

    def send(stop: threading.Event) -> None:
        outcome["answer"] = send_and_read(port, one_byte_chunk_upload(), timeout=120)

    with in_background(send):
        time.sleep(2)
        yield "a 1 MB attachment in one-byte HTTP chunks, 6 MB on the wire (row 3)"


@contextmanager
def thousand_aborted_uploads(port: int):
    with in_background(lambda stop: aborted_uploads(port, 1000)):
        time.sleep(2)
        yield "1,000 uploads declaring 30 MB, aborted after 1.7 MB (issue 17)"


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Stack:
    bridge: Service
    worker: Service
    url: str
    worker_metrics: int

    def rss(self) -> tuple[int, int]:
        return rss(self.bridge.process.pid), rss(self.worker.process.pid)

    def settle(self) -> None:
        """Waits until neither service has anything in flight, then SETTLE_SECONDS."""
        def idle() -> bool:
            worker = metrics(f"http://127.0.0.1:{self.worker_metrics}/metrics")
            bridge = metrics(self.url + "/metrics")
            return (bridge.get("bridge_inflight_requests") == 0 and worker.get("worker_receiving_calls") == 0
                    and worker.get("worker_queue_depth") == 0 and worker.get("worker_inflight_inferences") == 0)

        wait_for(idle, timeout=120, what="nothing in flight", interval=0.5)
        time.sleep(SETTLE_SECONDS)


def metrics(url: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text page."""
    samples = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def measure(url: str, small: list[Path]) -> tuple[float, float, int]:
    started = time.monotonic()
    ping = requests.get(url + "/ping", timeout=120)
    ping_seconds = time.monotonic() - started
    started = time.monotonic()
    response = http.post_like_original_tool(url + "/", {}, small, timeout=120)
    return ping_seconds, time.monotonic() - started, response.status_code if ping.status_code == 200 else 0


def megabytes(*sizes: int) -> str:
    return " → ".join(f"{size / 1e6:.0f}" for size in sizes)


def under_attack(stack: Stack, small: list[Path], attack: Callable) -> str:
    """One row: the attack's description, /ping and a valid request during it, RSS before, during and after."""
    before = stack.rss()
    with attack() as description:
        ping, request, status = measure(stack.url, small)
        during = stack.rss()
    stack.settle()
    after = stack.rss()
    return (f"| {description} | {ping:.3f} | {request:.3f} | {status} | "
            f"{megabytes(before[0], during[0], after[0])} | {megabytes(before[1], during[1], after[1])} |")


# ----------------------------------------------------------------------------------- one-shot inputs


def echoed_megabyte(stack: Stack, small: list[Path]) -> str:
    """Row 6: output_formats of 1,000,000 characters."""
    logged = len(stack.worker.log())
    started = time.monotonic()
    response = http.post_like_original_tool(stack.url + "/", {"output_formats": ["A" * 1_000_000]}, small,
                                            timeout=120)
    seconds = time.monotonic() - started
    written = len(stack.worker.log()) - logged
    return (f"`output_formats: [\"A\" * 1,000,000]` (row 6) | {response.status_code} "
            f"`{response.json()['error']['code']}` in {seconds:.2f} s, message {len(response.text):,} bytes; "
            f"worker log +{written:,} bytes")


def chunk_first(stack: Stack) -> str:
    """Row 8: a stream whose first message is a chunk."""
    with grpc.insecure_channel(stack.worker.address) as channel:
        infer = channel.stream_stream(wire.INFER_METHOD, request_serializer=wire.serialize_request)
        try:
            list(infer(iter([wire.request_chunk((b"DICM",))]), timeout=30))
            code = "OK"
        except grpc.RpcError as error:
            code = f"{error.code().name}: {error.details()}"
    return f"a gRPC stream whose first message is a chunk (row 8) | {code}; traceback in the log: " \
           f"{'yes' if 'Traceback' in stack.worker.log() else 'no'}"


def nan_geometry(stack: Stack, folder: Path) -> str:
    """Row 16: NaN ImagePositionPatient with linear measurements."""
    study = write_study(folder, [SeriesSpec("nan", rows=16, cols=16, count=2)])
    ds = pydicom.dcmread(study.instances[0].path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's, about the very value this row sends
        ds.ImagePositionPatient = ["0", "NaN", "0"]
        ds.save_as(study.instances[0].path, enforce_file_format=True)
    response = http.post_like_original_tool(stack.url + "/", {"inference_command": "get-linear-measurements"},
                                            [i.path for i in study.instances], timeout=60)
    return f"NaN ImagePositionPatient, linear measurements (row 16) | {response.status_code} " \
           f"`{response.json()['error']['code']}`: {response.json()['error']['message'][:90]}..."


def forged_patient_name(stack: Stack, folder: Path) -> str:
    """Row 7: a PatientName with a line break and a forged log line, every mock command with DICOM outputs."""
    marker = "Zq7Mark"
    study = write_study(folder, [SeriesSpec("ct", rows=32, cols=32, count=3)])
    for instance in study.instances:
        ds = pydicom.dcmread(instance.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's, about the very value this row sends
            ds.PatientName = f"Evil{marker}\n2026-12-07 01:00:00,000 ERROR worker.inference [input_hash=- " \
                             "request_id=- trace_id=-] FORGED"
            ds.PatientID = ds.AccessionNumber = f"{marker}1"
            ds.save_as(instance.path, enforce_file_format=True)
    statuses = set()
    for command in MockModel.commands:
        statuses.add(http.post_like_original_tool(
            stack.url + "/", {"inference_command": command, "output_formats": ["arterys", "dicom"]},
            [i.path for i in study.instances], timeout=120).status_code)
    logs = stack.worker.log() + stack.bridge.log()
    leaked = sum(marker in line for line in logs.splitlines())
    unformatted = sum(not re.match(r"\d{4}-\d\d-\d\d ", line) for line in logs.splitlines())
    return (f"PatientName with a line break and a forged log line, every command with DICOM outputs (row 7) | "
            f"{', '.join(map(str, sorted(statuses)))}; log lines with the name: {leaked}; lines not in our "
            f"format: {unformatted}")


def full_spool(tmp: Path, small: list[Path]) -> str:
    """Row 14: a 107 MB study, the spool limited to 64 MB (the pass used a 64 MB file system)."""
    big = [i.path for i in write_big_study(tmp / "spool-big", 107 << 20, rows=512, cols=512).instances]
    worker = start_worker(tmp, "mock_model", "--max-spool-bytes", str(64 << 20))
    bridge = start_bridge(tmp, worker.address)
    try:
        response = http.post_like_original_tool(f"http://{bridge.address}/", {}, big, timeout=300)
        after = http.post_like_original_tool(f"http://{bridge.address}/", {}, small, timeout=60).status_code
        error = response.json()["error"]
        traceback = "Traceback" in worker.log() + bridge.log()
        return (f"a 107 MB study, `--max-spool-bytes` 64 MB (row 14) | {response.status_code} `{error['code']}`, "
                f"Retry-After {response.headers.get('Retry-After')}: {error['message'][:60]}...; next request "
                f"{after}; traceback: {'yes' if traceback else 'no'}")
    finally:
        bridge.stop()
        worker.stop()


def hosts(stack: Stack) -> str:
    """Row 17: a request without Host, and one with two."""
    answers = [send_and_read(stack.bridge.port, b"GET /ping HTTP/1.1\r\n" + extra + b"\r\n", timeout=10)
               for extra in (b"", b"Host: a\r\nHost: b\r\n")]
    statuses = [answer.split(b" ", 2)[1].decode() if answer else "none" for answer in answers]
    return f"a request without Host / with two (row 17) | {statuses[0]} / {statuses[1]}, JSON `bad_request`"


def tls_bridge_rows(tmp: Path) -> Iterator[str]:
    """Row 1, on a bridge serving HTTPS."""
    pki = make_pki(tmp / "front-pki")
    worker = start_worker(tmp, "mock_model")
    bridge = spawn(tmp, "bridge", ["-m", "bridge", "--worker", worker.address, "--listen", "127.0.0.1:0",
                                   "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)], 0)
    try:
        bridge.port = reported_port(bridge, 60)
        url = f"https://127.0.0.1:{bridge.port}"
        wait_for(lambda: requests.get(url + "/healthz", verify=str(pki.ca), timeout=5).ok, timeout=60,
                 what="the HTTPS bridge")
        tls_connection_flood(bridge.port)  # warm-up
        time.sleep(SETTLE_SECONDS)
        before, peak = rss(bridge.process.pid), 0
        for _ in range(5):
            tls_connection_flood(bridge.port)
            peak = max(peak, rss(bridge.process.pid))
        time.sleep(SETTLE_SECONDS)
        started = time.monotonic()
        status = requests.get(url + "/healthz", verify=str(pki.ca), timeout=30).status_code
        yield (f"| 3,000 TLS connections silent or with half a ClientHello, closed, 5 times (row 1) | "
               f"{megabytes(before, peak, rss(bridge.process.pid))} | /healthz {status} in "
               f"{time.monotonic() - started:.3f} s |")
    finally:
        bridge.stop()
        worker.stop()


def token_bridge_rows(tmp: Path) -> Iterator[str]:
    """Rows 2 (with tokens on) and 11, on a plain-HTTP bridge with a bearer token."""
    worker = start_worker(tmp, "mock_model")
    bridge = start_bridge(tmp, worker.address, env={"BRIDGE_TOKENS": "a-valid-token-of-some-length-0123"})
    url = f"http://{bridge.address}"
    try:
        requests.get(url + "/metrics", timeout=10)
        time.sleep(SETTLE_SECONDS)
        before = rss(bridge.process.pid)
        with pipelined_flood(bridge.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 15 << 20) as flood:
            during = rss(bridge.process.pid)
            started = time.monotonic()
            status = requests.get(url + "/healthz", timeout=30).status_code
            seconds = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        yield (f"| 15 MB of pipelined unauthenticated GET /metrics, never read (row 2) | "
               f"{megabytes(before, during, rss(bridge.process.pid))} | the bridge took {flood['sent'] >> 10:,} KiB; "
               f"/healthz meanwhile {status} in {seconds:.3f} s |")
        before, logged = rss(bridge.process.pid), len(bridge.log())
        session = requests.Session()
        codes = [session.get(url + "/metrics", timeout=10, headers={"Authorization": f"Bearer wrong{n}"}).status_code
                 for n in range(3000)]
        named = sum(1 for line in bridge.log()[logged:].splitlines() if "-> 401" in line and "from 127.0.0.1" in line)
        yield (f"| 3,000 wrong tokens on one connection (row 11) | {megabytes(before, rss(bridge.process.pid))} | "
               f"{codes.count(401)} x 401, then {codes.count(429)} x 429 with Retry-After; "
               f"401 lines naming the client: {named} |")
    finally:
        bridge.stop()
        worker.stop()


def failed_handshakes(tmp: Path, count: int = 1000) -> str:
    """Row 12: a flood of failed handshakes on a mutual-TLS worker, and a bridge with the wrong CA."""
    pki = make_pki(tmp / "pki")
    port = free_port()
    worker = spawn(tmp, "worker", ["-m", "worker", "--model", "mock_model", "--listen", f"127.0.0.1:{port}",
                                   "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                                   "--tls-client-ca", str(pki.ca)], port)
    other_ca = tmp / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(other_ca)
    try:
        wait_for(lambda: "loaded; serving" in worker.log(), timeout=60, what="the TLS worker", service=worker)
        handshake_flood(port, count)
        time.sleep(1)
        lines = worker.log().count("a handshake from")
        bridge = spawn(tmp, "bridge", ["-m", "bridge", "--worker", worker.address, "--listen", "127.0.0.1:0",
                                       "--worker-ca", str(other_ca)], 0)
        try:
            wait_for(lambda: "is not ready" in bridge.log(), timeout=30, what="the bridge's reason", service=bridge)
            reason = re.search(r"(CERTIFICATE_VERIFY_FAILED[^)]*?)(?:: OK)?\)", bridge.log())
        finally:
            bridge.stop()
        return (f"{count:,} failed TLS handshakes on a mutual-TLS worker; a bridge with the wrong CA (row 12) | "
                f"worker: {lines} line(s) naming the peer (the rest counted once a minute); bridge: "
                f"\"{reason[1] if reason else 'no reason logged'}\"")
    finally:
        worker.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="attacks-") as name:
        tmp = Path(name)
        small = [i.path for i in write_study(tmp / "small", [SeriesSpec("s", rows=512, cols=512, count=1)]).instances]
        big = [i.path for i in write_study(tmp / "big", [SeriesSpec("b", rows=512, cols=512, count=64)]).instances]
        worker_metrics = free_port()
        worker = start_worker(tmp, "mock_model", "--metrics-listen", f"127.0.0.1:{worker_metrics}")
        bridge = start_bridge(tmp, worker.address)
        stack = Stack(bridge, worker, f"http://{bridge.address}", worker_metrics)
        measure(stack.url, small)  # warm: the first request loads what every later one uses
        stack.settle()
        attacks = [
            lambda: contextmanager(lambda: (yield "no attack"))(),
            lambda: idle_connections(bridge.port),
            lambda: slowloris(bridge.port),
            lambda: slow_small_uploads(bridge.port, big),
            lambda: unread_answers(bridge.port, big),
            lambda: silent_streams(worker.address, big),
            lambda: crowd_of_slow_uploads(bridge.port),
            lambda: crowd_of_trickling_streams(worker.address),
            lambda: many_one_byte_chunks(worker.address),
            lambda: pipelined_healthz(bridge.port),
            lambda: one_byte_http_chunks(bridge.port),
            lambda: thousand_aborted_uploads(bridge.port),
        ]
        print("| attack | /ping s | valid request s | status | bridge RSS MB, before → during → after | "
              "worker RSS MB, before → during → after |")
        print("| --- | --- | --- | --- | --- | --- |")
        try:
            for attack in attacks:
                print(under_attack(stack, small, attack), flush=True)
            print()
            print("| input | what came back |")
            print("| --- | --- |")
            print(f"| {echoed_megabyte(stack, small)} |", flush=True)
            print(f"| {chunk_first(stack)} |", flush=True)
            print(f"| {nan_geometry(stack, tmp / 'nan')} |", flush=True)
            print(f"| {forged_patient_name(stack, tmp / 'forged')} |", flush=True)
            print(f"| {hosts(stack)} |", flush=True)
        finally:
            bridge.stop()
            worker.stop()
        print(f"| {full_spool(tmp, small)} |", flush=True)
        print(f"| {failed_handshakes(tmp)} |", flush=True)
        print()
        print("| attack on a bridge with HTTPS or tokens | bridge RSS MB, before → during → after | what came back |")
        print("| --- | --- | --- |")
        for row in (*tls_bridge_rows(tmp), *token_bridge_rows(tmp)):
            print(row, flush=True)


if __name__ == "__main__":
    main()

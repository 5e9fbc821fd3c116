"""Slow, idle and hostile clients against real `python -m bridge` and `python -m worker` processes.

Each test is one finding of an adversarial pass and the behaviour a user must see instead: idle and
slowloris connections do not delay anyone, slow uploads and unread answers hold no model, hung or
restarted workers are noticed quickly. Timeouts are shortened by flags so that the tests stay short;
the defaults are the same rules with longer times (README, "Limits and timeouts").
"""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import threading
import time
import urllib.request

import grpc
import pytest
import requests

from bridge.inference import SMALL_STUDY_BYTES
from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from tests import hostile
from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_standard_study, write_study
from tests.services import free_port, start_bridge, start_worker, wait_for, wait_for_health
from tests.worker_client import CHANNEL_OPTIONS, dicom_parts

SHORT = ("--header-timeout", "1", "--body-timeout", "1", "--send-timeout", "2")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("hostile") / "study")


def instances(study, count: int = 3):
    return [i.path for i in study.instances][:count]


def metric(port: int, name: str, **labels) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def timed(function, *args, **kwargs):
    started = time.monotonic()
    result = function(*args, **kwargs)
    return result, time.monotonic() - started


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The mock model's worker (with metrics) and a bridge with short timeouts."""
    tmp = tmp_path_factory.mktemp("stack")
    metrics_port = free_port()
    worker = start_worker(tmp, "mock_model", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    bridge = start_bridge(tmp, worker.address, *SHORT)
    yield {"worker": worker, "bridge": bridge, "url": f"http://{bridge.address}", "port": bridge.port,
           "worker_metrics": metrics_port}
    bridge.stop()
    worker.stop()


# ---------------------------------------------------------------------------------------------- stalls


def test_idle_and_slowloris_connections_delay_no_one(stack, study):
    idle = [connect(stack["port"]) for _ in range(200)]
    slow = [connect(stack["port"]) for _ in range(20)]
    stop = threading.Event()

    def trickle() -> None:  # a header byte at a time, as slowloris does
        for index in range(1000):
            for sock in slow:
                try:
                    sock.send(b"POST / HTTP/1.1\r\nX-a: b\r\n"[index % 26:index % 26 + 1])
                except OSError:
                    pass
            if stop.wait(0.1):
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        # Broken, each waited for a connection thread (up to the 60 s socket timeout); the bound is loose
        # because the machine is shared, the point is "not stalled".
        for path in ("/ping", "/healthcheck"):
            response, seconds = timed(requests.get, stack["url"] + path, timeout=10)
            assert response.status_code == 200 and seconds < 2, (path, seconds)
        response, seconds = timed(http.post_like_original_tool, stack["url"] + "/", {}, instances(study), timeout=10)
        assert response.status_code == 200 and seconds < 2, seconds
        assert metric(stack["port"], "bridge_http_open_connections") >= 220
    finally:
        stop.set()
        sender.join()
    # Past the header timeout (1 s here) the idle and the slow ones are closed by the HTTP server (hyper),
    # without an answer: a head that never completed is owed none.
    assert read_all(idle[0], timeout=5) == b""
    assert read_all(slow[0], timeout=5) == b""
    for sock in idle + slow:
        sock.close()
    wait_for(lambda: metric(stack["port"], "bridge_http_open_connections") <= 2, timeout=10, what="sockets closed")


def slow_upload(port: int, body: bytes, content_type: str, fast_bytes: int, results: list) -> None:
    """Sends `fast_bytes` of the body at once, then a byte a second; records what came back."""
    sock = connect(port)
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:fast_bytes])
    sock.settimeout(0.5)
    answer = b""
    for offset in range(fast_bytes, len(body)):
        try:
            sock.send(body[offset:offset + 1])
            answer += sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            continue
        except OSError:
            break
        if answer:
            break
    results.append(answer)
    sock.close()


def test_slow_uploads_hold_no_model_slot_and_are_cut(tmp_path, study):
    """Five clients send 1 MiB fast and then a byte a second, with a small queue (1 running + 4 queued): the
    slow ones hold neither the model nor its queue, are answered 408 once a rate window passes with too
    little, and a normal request meanwhile is answered."""
    metrics_port = free_port()
    worker = start_worker(tmp_path, "mock_model", "--queue-size", "4", "--metrics-listen",
                          f"127.0.0.1:{metrics_port}")
    bridge = start_bridge(tmp_path, worker.address, *SHORT)
    try:
        big = write_study(tmp_path / "big", [SeriesSpec("big", rows=512, cols=512, count=8)])
        parts = [("application/json", b"{}")] + [("application/dicom", i.path.read_bytes()) for i in big.instances]
        body = http.hand_built_body(parts, "b")
        results: list = []
        uploads = [threading.Thread(target=slow_upload, args=(bridge.port, body, "multipart/related; boundary=b",
                                                              1 << 20, results)) for _ in range(5)]
        for upload in uploads:
            upload.start()
        wait_for(lambda: metric(metrics_port, "worker_receiving_calls") == 5, timeout=10,
                 what="5 slow uploads admitted")
        assert metric(metrics_port, "worker_inflight_inferences") == 0  # no model slot held
        assert metric(metrics_port, "worker_queue_depth") == 0  # nor a place in the model's queue
        response, seconds = timed(http.post_like_original_tool, f"http://{bridge.address}/", {}, instances(study),
                                  timeout=30)
        assert response.status_code == 200, response.text
        for upload in uploads:
            upload.join(30)
        assert len(results) == 5 and all(r.startswith(b"HTTP/1.1 408") for r in results), results
        assert seconds < 5, seconds
        wait_for(lambda: metric(metrics_port, "worker_receiving_calls") == 0, timeout=10, what="places freed")
    finally:
        bridge.stop()
        worker.stop()


@pytest.mark.parametrize(("images", "receiving"), [(16, 40), (4, 0)], ids=["2-MB-bodies", "half-MB-bodies"])
def test_forty_stalled_uploads_do_not_shut_out_a_normal_request(tmp_path, study, images, receiving):
    """Default settings. 40 clients send their headers and 64 KiB, then nothing. Bodies over 1 MiB stream to
    the worker as they arrive: the stalled ones hold places for studies still arriving, which are bounded
    apart from the model's queue (32), so a normal request is answered at once (it got 503 worker_busy after
    10 s while they held the queue). Smaller bodies are read whole before any call: they hold nothing there."""
    metrics_port = free_port()
    worker = start_worker(tmp_path, "mock_model", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    bridge = start_bridge(tmp_path, worker.address)
    stalled = []
    try:
        big = write_study(tmp_path / "big", [SeriesSpec("big", rows=256, cols=256, count=images)])
        parts = [("application/json", b"{}")] + [("application/dicom", i.path.read_bytes()) for i in big.instances]
        body = http.hand_built_body(parts, "b")
        assert (len(body) > SMALL_STUDY_BYTES) == (receiving > 0)
        head = http.raw_post_head(body)
        for index in range(40):  # 40 clients, each from an address of its own (one address may send 32 at once)
            sock = hostile.connect(bridge.port, hostile.source_address(index))
            sock.sendall(head + body[: 64 << 10])
            stalled.append(sock)
        wait_for(lambda: metric(bridge.port, "bridge_inflight_requests") == 40, timeout=15,
                 what="40 stalled uploads in the bridge")
        wait_for(lambda: metric(metrics_port, "worker_receiving_calls") == receiving, timeout=15,
                 what=f"{receiving} stalled uploads admitted")
        response, seconds = timed(http.post_like_original_tool, f"http://{bridge.address}/", {}, instances(study),
                                  timeout=30)
        assert response.status_code == 200, response.text
        assert seconds < 3, seconds
        assert metric(metrics_port, "worker_receiving_calls") == receiving
    finally:
        for sock in stalled:
            sock.close()
        bridge.stop()
        worker.stop()


def test_a_client_that_never_reads_its_answer_holds_no_model(tmp_path):
    """A 16 MiB mask asked for and never read: the model slot is free once infer() returns, the client is cut
    off after the send timeout, and nothing else stays held."""
    metrics_port = free_port()
    worker = start_worker(tmp_path, "mock_model", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    bridge = start_bridge(tmp_path, worker.address, *SHORT)
    try:
        big = write_study(tmp_path / "big", [SeriesSpec("big", rows=512, cols=512, count=64)])
        parts = [("application/json", json.dumps({"inference_command": "get-probability-mask"}).encode())]
        parts += [("application/dicom", i.path.read_bytes()) for i in big.instances]
        body = http.hand_built_body(parts, "b")
        sock = connect(bridge.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(http.raw_post_head(body) + body)
        wait_for(lambda: metric(metrics_port, "worker_inference_duration_seconds_count", stage="infer") >= 1,
                 timeout=20, what="the model to return")
        assert metric(metrics_port, "worker_inflight_inferences") == 0
        response, seconds = timed(requests.get, f"http://{bridge.address}/ping", timeout=10)
        assert response.status_code == 200 and seconds < 2
        wait_for(lambda: metric(bridge.port, "bridge_http_rejected_total", reason="send_timeout") == 1, timeout=15,
                 what="the unread answer to be cut off")
        # Nothing else is held: the worker's call has ended (sent into the buffers, or cancelled with the
        # connection) and its place in the queue is free.
        wait_for(lambda: metric(metrics_port, "worker_inferences_total") == 1, timeout=10, what="the call to end")
        assert metric(metrics_port, "worker_queue_depth") == 0
        sock.close()
        # Counted and logged as the client's doing, not as a broken answer (502).
        wait_for(lambda: metric(bridge.port, "bridge_http_requests_total", route="/", code="408") == 1, timeout=10,
                 what="the request to be counted")
        assert metric(bridge.port, "bridge_http_requests_total", route="/", code="502") == 0
        assert re.search(r"POST / -> 408 .*\(broken off: the client stopped reading\)", bridge.log())
    finally:
        bridge.stop()
        worker.stop()


def test_a_grpc_stream_that_stops_sending_is_ended(tmp_path, study):
    worker = start_worker(tmp_path, "mock_model", "--idle-timeout-seconds", "1")
    channel = grpc.insecure_channel(worker.address, options=CHANNEL_OPTIONS)
    try:
        stall = threading.Event()

        def messages():
            yield pb.InferRequest(header=pb.RequestHeader(request_json=b"{}"))
            kind, content_type, data = dicom_parts(instances(study, 1))[0]
            yield pb.InferRequest(part=pb.PartHeader(kind=kind, content_type=content_type))
            yield pb.InferRequest(chunk=data[:1000])
            stall.wait(30)  # and then nothing

        with pytest.raises(grpc.RpcError) as caught:
            _, seconds = timed(lambda: list(pb_grpc.InferenceStub(channel).Infer(messages(), timeout=30)))
        stall.set()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "sent nothing for 1 s" in caught.value.details()
    finally:
        channel.close()
        worker.stop()


def test_a_hung_worker_is_noticed_and_avoided(tmp_path, study):
    """kill -STOP on one of two workers: within 10 s (keepalive) requests go to the other one at once."""
    hung = start_worker(tmp_path, "mock_model")
    healthy = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, f"ipv4:{hung.address},{healthy.address}")
    url = f"http://{bridge.address}/"
    try:
        assert http.post_like_original_tool(url, {}, instances(study), timeout=10).status_code == 200
        hung.process.send_signal(signal.SIGSTOP)
        time.sleep(10)  # keepalive: a ping every 5 s, 4 s to answer
        for _ in range(6):  # none waits for the hung one (that would take the 5 s admission timeout)
            response, seconds = timed(http.post_like_original_tool, url, {}, instances(study), timeout=10)
            assert response.status_code == 200 and seconds < 2, seconds
        hung.process.send_signal(signal.SIGCONT)
    finally:
        bridge.stop()
        hung.stop()
        healthy.stop()


def test_a_restarted_worker_is_used_at_once_whatever_the_outage(tmp_path, study):
    """gRPC's default reconnect backoff grows towards 120 s; the bridge's stays at a second."""
    port = free_port()
    worker = start_worker(tmp_path, "mock_model", port=port)
    bridge = start_bridge(tmp_path, worker.address)
    url = f"http://{bridge.address}/"
    try:
        assert http.post_like_original_tool(url, {}, instances(study), timeout=10).status_code == 200
        worker.process.kill()
        worker.process.wait()
        time.sleep(12)  # long enough for the default backoff to reach several seconds
        response = http.post_like_original_tool(url, {}, instances(study), timeout=10)
        assert response.status_code == 503 and "Retry-After" in response.headers
        worker = start_worker(tmp_path, "mock_model", port=port, wait_serving=False)
        wait_for_health(worker, timeout=30)
        serving_at = time.monotonic()
        while http.post_like_original_tool(url, {}, instances(study), timeout=10).status_code != 200:
            assert time.monotonic() - serving_at < 3, "no 200 within 3 s of the worker reporting SERVING"
            time.sleep(0.05)
    finally:
        bridge.stop()
        worker.stop()


def test_many_small_concurrent_requests_all_get_complete_answers(stack, study):
    """A result can reach the bridge while its last write is still finishing; that must never cancel the
    call and leave a 200 half sent (a bug found under load)."""
    def run(count: int, out: list) -> None:
        for _ in range(count):
            response = http.post_like_original_tool(stack["url"] + "/", {}, instances(study, 1), timeout=30)
            out.append((response.status_code, len(response.content) == int(response.headers["Content-Length"])))

    results: list = []
    threads = [threading.Thread(target=run, args=(40, results)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 320 and all(code == 200 and complete for code, complete in results)


def test_32_clients_with_default_settings_all_get_200(tmp_path, study):
    worker = start_worker(tmp_path, "mock_model.faults:SlowModel", env={"MOCK_INFER_SECONDS": "0.02"})
    bridge = start_bridge(tmp_path, worker.address)
    try:
        results: list = []

        def client() -> None:
            for _ in range(3):
                results.append(http.post_like_original_tool(f"http://{bridge.address}/", {}, instances(study, 1),
                                                            timeout=60).status_code)

        threads = [threading.Thread(target=client) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert results == [200] * 96
    finally:
        bridge.stop()
        worker.stop()


def test_a_call_refused_by_a_full_worker_is_taken_by_another(tmp_path, study):
    busy = start_worker(tmp_path, "mock_model.faults:SlowModel", "--queue-size", "0", env={"MOCK_INFER_SECONDS": "5"})
    free = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, f"ipv4:{busy.address},{free.address}", "--queue-wait-seconds", "0")
    url = f"http://{bridge.address}/"
    try:
        # Whichever worker round_robin picks first, one request soon occupies the slow one; from then on it
        # refuses, and each refused call must be retried on the free worker rather than answered 503.
        results: list = []
        first = threading.Thread(target=lambda: results.append(
            http.post_like_original_tool(url, {}, instances(study), timeout=30).status_code))
        first.start()
        for _ in range(10):
            results.append(http.post_like_original_tool(url, {}, instances(study), timeout=30).status_code)
        first.join(30)
        assert results.count(200) == 11, results
    finally:
        bridge.stop()
        busy.stop()
        free.stop()


def test_idle_connections_beyond_the_limit_wait_and_are_never_refused(tmp_path, study):
    """More idle sockets than --max-connections: newcomers wait in the listen queue (never refused: a refused
    liveness probe would restart the pod) and are served as soon as the idle ones have used up their header
    timeout (1 s here); with the default limit, 5,000 idle sockets (above the 4,096 it once was) delay nobody."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # this test's own sockets
    worker = start_worker(tmp_path, "mock_model")
    small = start_bridge(tmp_path, worker.address, "--max-connections", "20", "--header-timeout", "1")
    default = start_bridge(tmp_path, worker.address)
    idle = []
    try:
        idle += [connect(small.port) for _ in range(40)]
        idle += [connect(default.port) for _ in range(5000)]
        for bridge, bound in ((small, 4), (default, 2)):
            for path in ("/ping", "/healthz", "/healthcheck"):
                response, seconds = timed(requests.get, f"http://{bridge.address}{path}", timeout=10)
                assert response.status_code == 200 and seconds < bound, (path, response.status_code, seconds)
            response = http.post_like_original_tool(f"http://{bridge.address}/", {}, instances(study), timeout=30)
            assert response.status_code == 200, response.text
        assert metric(default.port, "bridge_http_open_connections") >= 5000
    finally:
        for sock in idle:
            sock.close()
        small.stop()
        default.stop()
        worker.stop()

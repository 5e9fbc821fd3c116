"""Service routes, metrics, spreading over several workers, and cancellation when the client leaves."""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from requests_toolbelt import MultipartEncoder

from mock_model.faults import SlowModel
from tests import http_helpers as http
from tests.dicom_factory import write_standard_study
from tests.services import free_port, health_status, start_bridge, start_worker
from worker.serving.config import WorkerConfig
from worker.serving.server import create_server


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("study") / "study")


def metric_value(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_service_routes_and_metrics(tmp_path, study):
    worker = start_worker(tmp_path, "mock_model", env={"LOG_LEVEL": "DEBUG"})  # per-call lines are DEBUG
    bridge = start_bridge(tmp_path, worker.address)
    url = f"http://{bridge.address}"
    try:
        assert requests.get(url + "/healthcheck").text == "READY"
        assert requests.post(url + "/healthcheck").text == "READY"
        assert requests.get(url + "/ping").text == "inference-service is up and accepting connections"
        assert requests.post(url + "/ping").status_code == 200
        assert requests.get(url + "/healthz").text == "ok"
        assert requests.get(url + "/readyz").text == "READY"
        paths = [i.path for i in study.instances]
        response = http.post_like_original_tool(url + "/", {"inference_command": "get-probability-mask"}, paths)
        assert response.status_code == 200
        error = requests.post(url + "/", data=b"x", headers={"Content-Type": "text/plain"})
        assert error.status_code == 415

        metrics = requests.get(url + "/metrics").text
        assert metric_value(metrics, "bridge_http_requests_total", route="/", code="200") == 1
        assert metric_value(metrics, "bridge_http_requests_total", route="/", code="415") == 1
        assert metric_value(metrics, "bridge_http_requests_total", route="/healthcheck", code="200") >= 2
        assert metric_value(metrics, "bridge_http_request_duration_seconds_count", route="/") == 2
        assert metric_value(metrics, "bridge_request_bytes_total") >= sum(p.stat().st_size for p in paths)
        assert metric_value(metrics, "bridge_response_bytes_total") >= len(response.content)
        assert metric_value(metrics, "bridge_inflight_requests") == 0
        assert metric_value(metrics, "bridge_worker_ready", route="/") == 1
        assert not re.search(r'route="/nowhere', metrics)
        # Every log line about the request names its input hash.
        answer = http.parse_answer(response)
        input_hash = answer.hashes.split(":")[0]
        bridge_lines = [line for line in bridge.log().splitlines() if "POST / -> 200" in line]
        assert bridge_lines and all(f"input_hash={input_hash}" in line for line in bridge_lines)
        worker_lines = [line for line in worker.log().splitlines() if "received" in line]
        assert worker_lines and all(f"input_hash={input_hash}" in line for line in worker_lines)
    finally:
        bridge.stop()
        worker.stop()


def worker_inferences(metrics_port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    return metric_value(text, "worker_inferences_total", outcome="ok")


@pytest.mark.parametrize("form", ["ipv4", "dns"])
def test_one_bridge_spreads_requests_over_all_workers(tmp_path, study, form):
    metrics_ports = [free_port(), free_port()]
    workers = [start_worker(tmp_path, "mock_model", "--metrics-listen", f"127.0.0.1:{p}") for p in metrics_ports]
    if form == "ipv4":
        target = "ipv4:" + ",".join(w.address for w in workers)
        bridge = start_bridge(tmp_path, target)
    else:
        # One name resolving to one worker is enough to show the dns:/// form works end to end.
        target = f"dns:///localhost:{workers[0].port}"
        bridge = start_bridge(tmp_path, target)
    try:
        paths = [i.path for i in study.instances[:3]]
        for _ in range(8):
            assert http.post_like_original_tool(f"http://{bridge.address}/", {}, paths).status_code == 200
        counts = [worker_inferences(p) for p in metrics_ports]
        assert sum(counts) == 8
        if form == "ipv4":
            assert all(c >= 2 for c in counts), counts  # round_robin, not pick_first
    finally:
        bridge.stop()
        for worker in workers:
            worker.stop()


def test_a_loading_worker_gets_no_request(tmp_path, study):
    ready = start_worker(tmp_path, "mock_model")
    metrics_port = free_port()
    loading = start_worker(tmp_path, "mock_model.faults:SlowLoadingModel", "--metrics-listen",
                           f"127.0.0.1:{metrics_port}", env={"MOCK_LOAD_SECONDS": "600"}, wait_serving=False)
    bridge = start_bridge(tmp_path, f"ipv4:{ready.address},{loading.address}")
    try:
        deadline = time.monotonic() + 30
        while health_status(loading.port) != "NOT_SERVING" and time.monotonic() < deadline:
            time.sleep(0.1)  # the loading worker is up and answering health, not only starting
        assert health_status(loading.port) == "NOT_SERVING"
        paths = [i.path for i in study.instances[:3]]
        for _ in range(6):
            assert http.post_like_original_tool(f"http://{bridge.address}/", {}, paths).status_code == 200
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert metric_value(text, "worker_inferences_total") == 0
        assert metric_value(text, "worker_model_loaded") == 0
    finally:
        bridge.stop()
        loading.stop()
        ready.stop()


def test_a_client_that_hangs_up_cancels_the_worker_call(tmp_path, study, monkeypatch):
    monkeypatch.setenv("MOCK_INFER_SECONDS", "20")
    model = SlowModel()
    worker = create_server(model, WorkerConfig(model="slow", listen="127.0.0.1:0"))
    worker.start()
    worker.load_model()
    bridge = start_bridge(tmp_path, f"127.0.0.1:{worker.port}")
    try:
        encoder = MultipartEncoder(fields=http.original_tool_fields({}, [i.path for i in study.instances[:3]]))
        body = encoder.to_string()
        content_type = encoder.content_type.replace("multipart/form-data", "multipart/related")
        with socket.create_connection(("127.0.0.1", bridge.port)) as client:
            client.sendall(f"POST / HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            deadline = time.monotonic() + 10
            while worker.metrics.inflight._value.get() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.metrics.inflight._value.get() == 1  # the model is inferring
        deadline = time.monotonic() + 10
        while model.stopped_early == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model.stopped_early == 1 and model.completed == 0
    finally:
        bridge.stop()
        worker.stop(0)


def test_sigterm_lets_the_inflight_request_finish(tmp_path, study, monkeypatch):
    monkeypatch.setenv("MOCK_INFER_SECONDS", "2")
    worker = create_server(SlowModel(), WorkerConfig(model="slow", listen="127.0.0.1:0"))
    worker.start()
    worker.load_model()
    bridge = start_bridge(tmp_path, f"127.0.0.1:{worker.port}", "--grace-seconds", "30")
    url = f"http://{bridge.address}/"
    try:
        with ThreadPoolExecutor(1) as pool:
            paths = [i.path for i in study.instances[:3]]
            request = {"inference_command": "get-bounding-box-2d"}
            pending = pool.submit(http.post_like_original_tool, url, request, paths)
            deadline = time.monotonic() + 10
            while worker.metrics.inflight._value.get() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.metrics.inflight._value.get() == 1  # the model is inferring
            bridge.process.send_signal(signal.SIGTERM)
            response = pending.result(timeout=60)
        assert response.status_code == 200
        answer = http.parse_answer(response)
        assert len(answer.json["bounding_boxes_2d"]) >= 1
        assert bridge.process.wait(30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "ping", timeout=5)
    finally:
        bridge.stop()
        worker.stop(0)

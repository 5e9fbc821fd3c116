"""Every row of the error table (docs/protocol.md) against real bridge and worker processes, which keep serving."""

from __future__ import annotations

import contextlib
import hashlib
import http.client as httpclient
import json
import re
import socket
import threading
from concurrent import futures

import grpc
import pytest
import requests
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from tests import http_helpers as http
from tests.dicom_factory import write_standard_study
from tests.services import free_port, start_bridge, start_worker, wait_for, wait_for_http

LIMITS = ("--max-body-bytes", "400000", "--max-parts", "6", "--max-part-bytes", "200000")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("study") / "study")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    worker = start_worker(tmp, "mock_model")
    failing = start_worker(tmp, "mock_model.faults:FailingModel")
    unprocessable = start_worker(tmp, "tests.models:UnprocessableModel")
    bridge = start_bridge(tmp, worker.address, "--route", f"/failing={failing.address}",
                          "--route", f"/unprocessable={unprocessable.address}")
    limited = start_bridge(tmp, worker.address, *LIMITS)
    yield {"url": f"http://{bridge.address}", "limited": f"http://{limited.address}", "bridge": bridge}
    for service in (bridge, limited, worker, failing, unprocessable):
        service.stop()


def error_of(response: requests.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    if code:
        assert error["code"] == code
    assert error["message"]
    return error["message"]


def instances(study, count=3):
    return [i.path for i in study.instances[:count]]


def post_raw(url: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(url + "/", data=body, headers={"Content-Type": content_type})


# ------------------------------------------------------------------------------------------ 400 / 415


def test_unsupported_media_types(stack):
    for content_type in ("text/plain", "image/png", "", "multipart/mixed; boundary=x"):
        message = error_of(post_raw(stack["url"], b"x", content_type), 415, "unsupported_media_type")
        assert "multipart/related" in message


@pytest.mark.parametrize(
    ("content_type", "body", "needle"),
    [
        ("multipart/related", b"--x\r\n\r\n{}\r\n--x--\r\n", "boundary"),
        ("multipart/related; boundary=x; boundary=y", b"--x\r\n\r\n{}\r\n--x--\r\n", "appears twice"),
        ("multipart/related; boundary", b"--x\r\n\r\n{}\r\n--x--\r\n", "Content-Type header is malformed"),
        ('multipart/related; boundary=""', b"--x\r\n\r\n{}\r\n--x--\r\n", "boundary"),
        ("multipart/related; boundary=other", b"--x\r\n\r\n{}\r\n--x--\r\n" + b"y" * 70000, "boundary"),
        ("multipart/related; boundary=x", b"--x\r\n\r\n{not json}\r\n--x--\r\n", "not valid JSON"),
        ("multipart/related; boundary=x", b"--x\r\n\r\n[1, 2]\r\n--x--\r\n", "must be a JSON object"),
        ("multipart/related; boundary=x", b'--x\r\n\r\n{"inference_command": 3}\r\n--x--\r\n', "inference_command"),
        ("multipart/related; boundary=x", b"--x\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--x--\r\n",
         "first part must be the request JSON"),
        ("multipart/related; boundary=x", b"--x--\r\n", "no parts"),
        ("multipart/related; boundary=x", b"--x\r\n\r\n{}\r\n--x\r\nContent-Type: application/dicom\r\n\r\nabc",
         "truncated"),
        ("multipart/related; boundary=x", b"--x\r\nbad header line\r\n\r\n{}\r\n--x--\r\n", "header"),
    ],
)
def test_malformed_multipart_bodies(stack, content_type, body, needle):
    message = error_of(post_raw(stack["url"], body, content_type), 400)
    assert needle.lower() in message.lower()


def test_invalid_json_in_the_study_path_form(stack):
    message = error_of(post_raw(stack["url"], b"{oops", "application/json"), 400, "bad_request")
    assert "not valid JSON" in message


def test_a_part_that_is_not_dicom(stack):
    body = http.hand_built_body([("application/json", b"{}"), ("application/dicom", b"not a dicom file")], "b")
    message = error_of(post_raw(stack["url"], body, "multipart/related; boundary=b"), 400, "bad_request")
    assert "not a readable DICOM file" in message


def test_unknown_command_names_the_valid_ones(stack, study):
    response = http.post_like_original_tool(stack["url"] + "/", {"inference_command": "get-nothing"},
                                            instances(study))
    message = error_of(response, 400, "bad_request")
    assert "get-nothing" in message and "get-probability-mask" in message


def test_a_study_without_instances_is_rejected_by_the_model(stack):
    body = http.hand_built_body([("application/json", b"{}")], "b")
    message = error_of(post_raw(stack["url"], body, "multipart/related; boundary=b"), 400, "bad_request")
    assert "no DICOM instance" in message


# ---------------------------------------------------------------------------------------------- 413


def test_declared_body_over_the_limit(stack):
    body = http.hand_built_body([("application/json", b"{}")] + [("application/dicom", b"x" * 500_000)], "b")
    message = error_of(post_raw(stack["limited"], body, "multipart/related; boundary=b"), 413, "payload_too_large")
    assert "400000" in message


def test_chunked_body_over_the_limit(stack):
    def chunks():
        yield b'--b\r\n\r\n{}\r\n--b\r\nContent-Type: application/dicom\r\n\r\n'
        for _ in range(50):
            yield b"x" * 10_000
        yield b"\r\n--b--\r\n"

    message = error_of(requests.post(stack["limited"] + "/", data=chunks(),
                                     headers={"Content-Type": "multipart/related; boundary=b"}), 413)
    assert "exceeds" in message


def test_too_many_parts(stack):
    body = http.hand_built_body([("application/json", b"{}")] + [("application/dicom", b"x")] * 10, "b")
    message = error_of(post_raw(stack["limited"], body, "multipart/related; boundary=b"), 413, "payload_too_large")
    assert "6" in message


def test_part_over_the_limit(stack):
    body = http.hand_built_body([("application/json", b"{}"), ("application/dicom", b"x" * 250_000)], "b")
    message = error_of(post_raw(stack["limited"], body, "multipart/related; boundary=b"), 413, "payload_too_large")
    assert "200000" in message


# ----------------------------------------------------------------------------------------- 422 / 500


def test_model_refusing_the_study_is_422(stack, study):
    response = http.post_like_original_tool(stack["url"] + "/unprocessable", {}, instances(study))
    assert "chest X-rays" in error_of(response, 422, "unprocessable_study")


def test_model_raising_is_500_and_the_worker_keeps_serving(stack, study):
    for _ in range(2):
        response = http.post_like_original_tool(stack["url"] + "/failing", {}, instances(study))
        # The body says the model failed; its exception stays in the worker's log.
        message = error_of(response, 500, "model_error")
        assert "model failed" in message and "mock failure" not in message
        assert response.json()["error"]["request_id"] == response.headers["X-Request-Id"]
    assert requests.get(stack["url"] + "/healthcheck").text == "READY"


def test_every_error_left_the_service_serving(stack, study):
    response = http.post_like_original_tool(stack["url"] + "/", {}, instances(study))
    assert http.parse_answer(response).json["bounding_boxes_2d"]
    response = http.post_like_original_tool(stack["limited"] + "/", {}, instances(study, 2))
    assert response.status_code == 200


def test_unknown_route_and_method(stack):
    assert error_of(requests.post(stack["url"] + "/nowhere", data=b"x"), 404)
    assert error_of(requests.get(stack["url"] + "/"), 405)


# ---------------------------------------------------------------------------------------------- 503


def test_no_worker_reachable(tmp_path, study):
    bridge = start_bridge(tmp_path, f"127.0.0.1:{free_port()}", wait_ready=False)
    try:
        url = f"http://{bridge.address}"
        text = requests.get(url + "/healthcheck", timeout=5).text
        assert text == "NOT READY: route /: no worker can be reached", text  # open endpoint: no address
        assert requests.post(url + "/healthcheck", timeout=5).status_code == 200
        response = requests.get(url + "/readyz", timeout=5)
        error_of(response, 503, "worker_unavailable")
        assert "127.0.0.1" not in response.text and "UNAVAILABLE" not in response.text, response.text
        response = http.post_like_original_tool(url + "/", {}, instances(study), timeout=30)
        error_of(response, 503, "worker_unavailable")
        assert int(response.headers["Retry-After"]) > 0
        assert requests.get(url + "/healthz").text == "ok"
    finally:
        bridge.stop()


def test_healthcheck_right_after_start_gives_the_first_checks_answer(tmp_path):
    """The cause of a flaky `test_no_worker_reachable`: /healthcheck answered "not checked yet" when it came
    before the first health check had returned (under load, or with a slow worker). A worker that accepts TCP
    and never speaks holds that check until its 1 s timeout, so a probe sent as soon as /ping answers always
    lands inside it; it failed this way every time before /healthcheck waited for the first check."""
    silent = socket.create_server(("127.0.0.1", 0))
    bridge = start_bridge(tmp_path, f"127.0.0.1:{silent.getsockname()[1]}", wait_ready=False)
    try:
        text = requests.get(f"http://{bridge.address}/healthcheck", timeout=10).text
        assert text == "NOT READY: route /: no worker can be reached", text
    finally:
        bridge.stop()
        silent.close()


def test_model_still_loading_then_ready(tmp_path, study):
    worker = start_worker(tmp_path, "mock_model.faults:SlowLoadingModel", env={"MOCK_LOAD_SECONDS": "4"},
                          wait_serving=False)
    bridge = start_bridge(tmp_path, worker.address, wait_ready=False)
    try:
        url = f"http://{bridge.address}"
        # The reason names the model load, not the network (the worker is reachable, its health NOT_SERVING).
        loading = "NOT READY: route /: workers answer, but none has its model loaded yet"
        wait_for(lambda: requests.get(url + "/healthcheck").text == loading, timeout=3, what="the loading reason")
        response = http.post_like_original_tool(url + "/", {}, instances(study))
        error_of(response, 503)
        assert "Retry-After" in response.headers
        wait_for_http(bridge, "/healthcheck", "READY", timeout=30)
        assert requests.get(url + "/readyz").status_code == 200
        assert http.post_like_original_tool(url + "/", {}, instances(study)).status_code == 200
    finally:
        bridge.stop()
        worker.stop()


def test_overloaded_worker_fails_fast_with_retry_after(tmp_path, study):
    metrics_port = free_port()
    worker = start_worker(tmp_path, "mock_model.faults:SlowModel", "--concurrency", "1", "--queue-size", "0",
                          "--metrics-listen", f"127.0.0.1:{metrics_port}", env={"MOCK_INFER_SECONDS": "3"})
    bridge = start_bridge(tmp_path, worker.address, "--queue-wait-seconds", "0")
    try:
        url = f"http://{bridge.address}/"
        results = {}
        first = threading.Thread(target=lambda: results.update(
            first=http.post_like_original_tool(url, {}, instances(study))))
        first.start()
        # Once the first call's study has arrived and holds the only slot, the second must be refused at once
        # (a call still receiving its study holds no place of the model's queue).
        wait_for(lambda: "worker_inflight_inferences 1.0" in requests.get(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text, what="the first call in the model")
        second = http.post_like_original_tool(url, {}, instances(study))
        error_of(second, 503, "worker_busy")
        assert int(second.headers["Retry-After"]) > 0
        first.join()
        assert results["first"].status_code == 200
    finally:
        bridge.stop()
        worker.stop()


# ---------------------------------------------------------------------------------------------- 504


def test_deadline_exceeded(tmp_path, study):
    worker = start_worker(tmp_path, "mock_model.faults:SlowModel", env={"MOCK_INFER_SECONDS": "5"})
    bridge = start_bridge(tmp_path, worker.address, "--deadline-seconds", "1")
    try:
        response = http.post_like_original_tool(f"http://{bridge.address}/", {}, instances(study))
        error_of(response, 504, "deadline_exceeded")
        assert requests.get(f"http://{bridge.address}/healthcheck").text == "READY"
    finally:
        bridge.stop()
        worker.stop()


# ---------------------------------------------------------------------------------------------- 502


class RogueServicer(pb_grpc.InferenceServicer):
    """A worker that breaks the protocol in the way named by the request's inference_command."""

    refusals = 0

    def Infer(self, request_iterator, context):
        header = next(request_iterator).header
        if header.inference_command == "huge-refusal":  # a status far over gRPC's metadata limit, at admission
            RogueServicer.refusals += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "A" * 40_000)
        context.send_initial_metadata((("admitted", "1"),))  # the contract's admission, then the study
        digest = hashlib.sha256(header.request_json)
        for message in request_iterator:
            digest.update(message.chunk)
        kind = header.inference_command
        shape = pb.BinaryDataShape(timepoints=1, depth=2, width=4, height=3)
        part = pb.Part(label="m", binary_type=pb.PROBABILITY_MASK, binary_data_shape=shape,
                       series_instance_uid="1.2", binary_size=24)
        if kind == "wrong-size":
            part.binary_size = 23
        elif kind == "unknown-type":
            part.binary_type = 42
        elif kind == "no-shape":
            part.ClearField("binary_data_shape")
        elif kind == "bad-palette":
            part.binary_type = pb.HEATMAP
            part.palette = "missing"
        yield pb.InferResponse(result=pb.InferResult(protocol_version="1.0", parts=[part],
                                                     input_hash=digest.hexdigest()))
        if kind == "short-stream":
            yield pb.InferResponse(binary=pb.BinaryChunk(part_index=0, data=b"\x01" * 10))
            return
        if kind == "second-result":
            yield pb.InferResponse(result=pb.InferResult(protocol_version="1.0"))
            return
        yield pb.InferResponse(binary=pb.BinaryChunk(part_index=0, data=b"\x01" * part.binary_size))


@pytest.fixture(scope="module")
def rogue_bridge(tmp_path_factory):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_InferenceServicer_to_server(RogueServicer(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("arterys.inference.v1.Inference", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    bridge = start_bridge(tmp_path_factory.mktemp("rogue"), f"127.0.0.1:{port}")
    yield f"http://{bridge.address}"
    bridge.stop()
    server.stop(0)


def rogue_request(command: str) -> bytes:
    return http.hand_built_body([("application/json", json.dumps({"inference_command": command}).encode())], "b")


@pytest.mark.parametrize(("command", "needle"), [
    ("wrong-size", "needs 24 bytes"),
    ("unknown-type", "unknown value 42"),
    ("no-shape", "binary_data_shape"),
    ("bad-palette", "palette"),
])
def test_a_worker_answer_that_breaks_the_protocol_is_502(rogue_bridge, command, needle):
    response = post_raw(rogue_bridge, rogue_request(command), "multipart/related; boundary=b")
    assert needle in error_of(response, 502, "bad_worker_answer")


@pytest.mark.parametrize("command", ["short-stream", "second-result"])
def test_a_worker_that_breaks_off_mid_answer_never_yields_a_complete_200(rogue_bridge, command):
    host, port = rogue_bridge.removeprefix("http://").split(":")
    connection = httpclient.HTTPConnection(host, int(port), timeout=30)
    body = rogue_request(command)
    connection.request("POST", "/", body, {"Content-Type": "multipart/related; boundary=b"})
    response = connection.getresponse()
    assert response.status == 200
    declared = int(response.getheader("Content-Length"))
    # A hanging bridge must fail this test: a timeout is not an incomplete answer.
    with pytest.raises((httpclient.IncompleteRead, ConnectionError)):
        data = response.read()
        assert len(data) == declared, "a complete body here would be a malformed 200"
        raise AssertionError("unreachable")  # pragma: no cover
    connection.close()


@pytest.mark.parametrize("command", ["short-stream", "second-result"])
def test_an_answer_that_breaks_off_still_starts_with_its_json(rogue_bridge, command):
    """docs/protocol.md: what arrives before a broken answer ends is its head and its result JSON at least. The
    JSON waits to leave with what follows it; when the answer breaks first, it leaves alone, so the server
    never answers with a whole 500 of its own."""
    host, port = rogue_bridge.removeprefix("http://").split(":")
    body = rogue_request(command)
    received = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(http.raw_post_head(body) + body)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), received[:300]
    assert len(answer) < int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])
    assert b"application/json" in answer.partition(b"\r\n\r\n")[0] and b'"protocol_version"' in answer


def test_the_good_answer_of_the_rogue_worker_passes(rogue_bridge):
    answer = http.parse_answer(post_raw(rogue_bridge, rogue_request("fine"), "multipart/related; boundary=b"))
    assert answer.binaries == [b"\x01" * 24]


def test_a_worker_answer_over_grpcs_limits_is_an_error_tried_once_never_busy(rogue_bridge):
    """Row 6 of issue 18: a refusal whose trailing metadata passed 16 KiB reached the bridge as RESOURCE_EXHAUSTED
    without the worker's error code; the bridge took it for a full worker and retried ~100 times for 10 s."""
    before = RogueServicer.refusals
    response = post_raw(rogue_bridge, rogue_request("huge-refusal"), "multipart/related; boundary=b")
    assert "could not be read" in error_of(response, 502, "bad_worker_answer")
    assert "Retry-After" not in response.headers
    assert RogueServicer.refusals - before == 1  # not retried

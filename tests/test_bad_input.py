"""Bad input is the sender's mistake: a clear 4xx naming what is wrong, never a 500 or 502, and nothing of
ours (paths, addresses, exception names) in the answer. Real `python -m bridge` and `python -m worker`
processes; direct gRPC where the worker must defend itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pydicom
import pydicom.uid
import pytest
import requests

from bridge.inference import SMALL_STUDY_BYTES
from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, make_dataset, write_standard_study
from tests.services import free_port, start_bridge, start_worker, wait_for, wait_for_health
from tests.worker_client import CHANNEL_OPTIONS, dicom_parts, request_messages

SHORT = ("--header-timeout", "2", "--body-timeout", "1")
INTERNALS = re.compile(r"Traceback|Error\b|Exception\b|/tmp/|/work/|127\.0\.0\.1|spool|part-\d{6}|arterys-worker")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("bad") / "study")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    (root / "loop").symlink_to(root / "loop")
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory, root):
    tmp = tmp_path_factory.mktemp("stack")
    worker = start_worker(tmp, "mock_model", "--study-root", str(root))
    bridge = start_bridge(tmp, worker.address, *SHORT)
    yield {"worker": worker, "bridge": bridge, "url": f"http://{bridge.address}", "port": bridge.port}
    bridge.stop()
    worker.stop()


def error_of(response: requests.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.json()["error"]
    if code:
        assert body["code"] == code, body
    assert not INTERNALS.search(body["message"]), f"internals in the answer: {body['message']}"
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body["message"]


def post_parts(url: str, parts: list[tuple[str, bytes]], **kwargs) -> requests.Response:
    return requests.post(url + "/", data=http.hand_built_body(parts, "b"),
                         headers={"Content-Type": "multipart/related; boundary=b", **kwargs.pop("headers", {})},
                         timeout=30, **kwargs)


def dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole request was sent (a 20 MB header): the answer is still readable
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return data, time.monotonic() - started


# --------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(("text", "needle"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"n": ' + b"7" * 5000 + b"}", "an integer of more than 4,300 digits"),
    (b'{"inference_command": "get-bounding-box-2d", "threshold": NaN}', "NaN is not a JSON value"),
])
def test_hostile_json_is_a_400_naming_the_problem(stack, text, needle):
    assert needle in error_of(post_parts(stack["url"], [("application/json", text)]), 400, "bad_request")
    response = requests.post(stack["url"] + "/", data=text, headers={"Content-Type": "application/json"}, timeout=30)
    assert needle in error_of(response, 400, "bad_request")


def test_a_long_inference_command_is_a_400(stack):
    response = post_parts(stack["url"], [("application/json", json.dumps({"inference_command": "x" * 15000}).encode())])
    assert "15000 characters" in error_of(response, 400, "bad_request")


# ------------------------------------------------------------------------------------------- DICOM


@pytest.mark.parametrize("cut", [143, 500])
def test_a_truncated_dicom_part_is_a_400_naming_it(stack, study, cut):
    good = study.instances[0].path.read_bytes()
    response = post_parts(stack["url"], [("application/json", b"{}"), ("application/dicom", good),
                                         ("application/dicom", good[:cut])])
    message = error_of(response, 400, "bad_request")
    assert "part 2" in message


def test_a_header_declaring_a_huge_image_is_refused_before_any_model(stack, study):
    spec = SeriesSpec("huge", rows=4, cols=4, count=1)
    ds = make_dataset(study_uid="1.2.3", spec=spec, number=1, position=(0, 0, 0))
    ds.Rows = ds.Columns = 12000
    ds.PixelData = b"\0" * 16
    message = error_of(post_parts(stack["url"], [("application/json", b"{}"), ("application/dicom", dicom_bytes(ds))]),
                       400, "bad_request")
    assert "12000 x 12000" in message and "holds 16" in message
    ds.Rows = ds.Columns = 65535
    message = error_of(post_parts(stack["url"], [("application/json", b"{}"), ("application/dicom", dicom_bytes(ds))]),
                       413, "payload_too_large")
    assert "more than the worker accepts" in message


@pytest.mark.parametrize(("change", "needle"), [
    ({"NumberOfFrames": "-5"}, "NumberOfFrames -5"),
    ({"NumberOfFrames": "0"}, "NumberOfFrames 0"),
    ({"SamplesPerPixel": 0}, "SamplesPerPixel 0"),
    ({"SOPInstanceUID": ""}, "has no SOPInstanceUID"),
])
@pytest.mark.parametrize("command", ["get-bounding-box-2d", "get-probability-mask"])
def test_impossible_header_values_are_a_400_before_any_model(stack, study, change, needle, command):
    """Found by a hostile probe: these reached the model (500 with a traceback, 502, or even 200)."""
    spec = SeriesSpec("odd", rows=4, cols=4, count=1)
    ds = make_dataset(study_uid="1.2.3", spec=spec, number=1, position=(0, 0, 0))
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    parts = [("application/json", json.dumps({"inference_command": command}).encode()),
             ("application/dicom", dicom_bytes(ds))]
    message = error_of(post_parts(stack["url"], parts), 400, "bad_request")
    assert needle in message and "part 1" in message, message


def test_a_deflated_instance_is_read_and_its_pixel_data_checked(stack):
    """Deflated Explicit VR Little Endian: the whole body is one zlib stream. It was refused as carrying no
    pixel data; now it is inflated for the check, and a short PixelData inside it is still a 400."""
    spec = SeriesSpec("deflated", rows=16, cols=20, count=1)
    ds = make_dataset(study_uid="1.2.3", spec=spec, number=1, position=(0, 0, 0))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    command = [("application/json", json.dumps({"inference_command": "get-bounding-box-2d"}).encode())]
    response = post_parts(stack["url"], command + [("application/dicom", dicom_bytes(ds))])
    assert response.status_code == 200, response.text
    assert http.parse_answer(response).json["bounding_boxes_2d"]
    ds.PixelData = ds.PixelData[:100]
    message = error_of(post_parts(stack["url"], command + [("application/dicom", dicom_bytes(ds))]), 400,
                       "bad_request")
    assert "PixelData holds 100" in message and "part 1" in message


def test_the_same_instance_twice_is_a_400_naming_both(stack, study):
    good = study.instances[0].path.read_bytes()
    response = post_parts(stack["url"], [("application/json", b"{}"), ("application/dicom", good),
                                         ("application/dicom", good)])
    message = error_of(response, 400, "bad_request")
    assert "part 1" in message and "part 2" in message and "same instance" in message


def test_an_answer_over_the_workers_limit_is_refused(limited_worker, study):
    parts = dicom_parts([study.instances[0].path])
    error = grpc_error(limited_worker, request_messages({"inference_command": "get-probability-mask"}, parts))
    assert error.code() == grpc.StatusCode.INTERNAL and "--max-result-bytes" in error.details()


# -------------------------------------------------------------------------------------------- HTTP


def test_a_negative_content_length_is_a_400_at_once(stack):
    answer, seconds = raw_exchange(stack["port"], b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer.lower() and seconds < 2


def test_a_body_shorter_than_its_content_length_is_a_client_timeout(stack):
    body = http.hand_built_body([("application/json", b"{}")], "b")
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary=b\r\nContent-Length: "
               + str(len(body) + 100).encode() + b"\r\n\r\n" + body)
    # Five times: the connection must close after the 408 every time. It once stayed open, at random, until
    # Python's garbage collector freed a reference cycle still holding the HTTP server's receive().
    for _ in range(5):
        answer, seconds = raw_exchange(stack["port"], request)
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer and seconds < 5
    wait_for(lambda: "-> 408" in stack["bridge"].log(), timeout=5, what="the 408 in the bridge's log")


@pytest.mark.parametrize("framing", ["half-closed", "chunk size not hex", "chunk longer than sent"])
def test_a_body_that_breaks_off_is_a_400_the_client_can_read(stack, framing):
    """A body cut short by the client's own FIN, or whose chunked framing breaks: granian reports both as a
    disconnect, but the client may still be reading, and gets a 400 it can act on (not a 499, a code meant
    for logs only)."""
    body = http.hand_built_body([("application/json", b"{}")], "b")
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary=b\r\n"
    if framing == "half-closed":
        request = head + b"Content-Length: " + str(len(body) + 100).encode() + b"\r\n\r\n" + body
    elif framing == "chunk size not hex":
        request = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\nzz\r\n" % (len(body), body)
    else:
        request = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(body) + 100, body)
    with socket.create_connection(("127.0.0.1", stack["port"]), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"broke off" in answer and b'"bad_request"' in answer, answer[-400:]


@pytest.mark.parametrize("head", [
    b"GET /ping HTTP/1.1\r\nX-Big: " + b"a" * (20 << 20) + b"\r\n\r\n",
    b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(100_000)) + b"\r\n",
])
def test_huge_or_countless_headers_are_a_431(stack, head):
    answer, seconds = raw_exchange(stack["port"], head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{stack['bridge'].process.pid}/status").read_text())[1])
    assert rss < 200_000, f"the bridge holds {rss} kB after refusing the headers"


@pytest.mark.parametrize("target", [b"CONNECT 127.0.0.1:50051", b"GET example.com:80"])
def test_a_request_target_that_is_not_a_path_is_a_400(stack, target):
    """CONNECT's authority form and the like: no proxying here, a 400, not a connection broken without an
    answer and a traceback in the log."""
    answer, _ = raw_exchange(stack["port"], target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in answer
    assert "Traceback" not in stack["bridge"].log()


@pytest.mark.parametrize("first", [b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", "post"])
def test_requests_pipelined_before_malformed_bytes_are_answered_first(stack, study, first):
    """A valid request and garbage in one packet: the valid one is answered, in order, then the 400."""
    if first == "post":
        body = http.hand_built_body([("application/json", json.dumps({"inference_command": "get-bounding-box-2d"})
                                      .encode()), ("application/dicom", study.instances[0].path.read_bytes())], "b")
        first = http.raw_post_head(body) + body
    answer, _ = raw_exchange(stack["port"], first + b"GARBAGE\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 (\d+) ", answer) == [b"200", b"400"], answer[:300]
    log = stack["bridge"].log()
    assert "after write_eof" not in log and "Traceback" not in log


def test_request_ids_cannot_break_or_forge_anything(stack, study):
    for given in ("x] FAKE [input_hash=" + "0" * 64, "caf\u00e9", "ok-id-1"):
        response = http.post_like_original_tool(stack["url"] + "/", {}, [study.instances[0].path],
                                                headers={"X-Request-Id": given.encode("utf-8")})
        assert response.status_code == 200
        sent_back = response.headers["X-Request-Id"]
        assert (sent_back == given) == (given == "ok-id-1"), sent_back  # replaced unless plain and short
    assert "FAKE" not in stack["bridge"].log() + stack["worker"].log()
    # A control character in a header is malformed HTTP: refused as such before anything reads it.
    answer, _ = raw_exchange(stack["port"], b"GET /ping HTTP/1.1\r\nX-Request-Id: a\x01b\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


# ---------------------------------------------------------------------------------------- studyPath


@pytest.mark.parametrize(("path", "status"), [("loop", 400), ("a" * 5000, 400), ("bad\x00name", 400),
                                              ("nowhere", 404), ("../..", 403)])
def test_hostile_study_paths_are_refused_without_paths(stack, root, path, status):
    response = requests.post(stack["url"] + "/", json={"studyPath": path}, timeout=30)
    message = error_of(response, status)
    assert str(root) not in message


# ------------------------------------------------------------------------------------- direct gRPC


@pytest.fixture(scope="module")
def limited_worker(tmp_path_factory):
    worker = start_worker(tmp_path_factory.mktemp("limited"), "mock_model", "--max-parts", "3",
                          "--max-part-bytes", "100000", "--max-result-bytes", "1000")
    channel = grpc.insecure_channel(worker.address, options=CHANNEL_OPTIONS)
    yield pb_grpc.InferenceStub(channel)
    channel.close()
    worker.stop()


def grpc_error(stub, messages) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Infer(messages, timeout=30))
    return caught.value


def test_the_worker_enforces_its_limits_on_direct_callers(limited_worker, study):
    parts = dicom_parts([i.path for i in study.instances[:4]])
    error = grpc_error(limited_worker, request_messages({}, parts))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "more than 3 parts" in error.details()
    big = [(pb.PART_KIND_ATTACHMENT, "application/octet-stream", b"x" * 200_000)]
    error = grpc_error(limited_worker, request_messages({}, big))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "exceeds 100000 bytes" in error.details()
    # A part that announces its size over the limit is refused before any of its bytes.
    header, _, *rest = list(request_messages({}, [(pb.PART_KIND_ATTACHMENT, "application/octet-stream", b"x")]))
    announced = pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_ATTACHMENT, size_hint=int(4.5 * 2**30)))
    error = grpc_error(limited_worker, iter([header, announced, *rest]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"announces {int(4.5 * 2**30)} bytes" in error.details(), error.details()


def test_the_worker_checks_a_hash_it_is_given_and_computes_its_own(limited_worker, study):
    parts = dicom_parts([study.instances[0].path])
    error = grpc_error(limited_worker, request_messages({}, parts, input_hash="0" * 64))
    assert error.code() == grpc.StatusCode.DATA_LOSS
    responses = list(limited_worker.Infer(request_messages({}, parts, input_hash=""), timeout=30))
    expected = http.expected_input_hash([b"{}", parts[0][2]])
    assert responses[0].result.input_hash == expected


def test_a_stream_without_its_end_is_refused(limited_worker, study):
    messages = list(request_messages({}, dicom_parts([study.instances[0].path])))[:-1]
    error = grpc_error(limited_worker, iter(messages))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "without an end message" in error.details()


# ------------------------------------------------------------------------------------------ left-overs


def test_a_killed_worker_leaves_no_spool_behind_after_a_restart(tmp_path, study):
    spool = tmp_path / "spool"
    port = free_port()
    worker = start_worker(tmp_path, "mock_model", "--spool-dir", str(spool), "--spool-memory-mib", "0", port=port)
    channel = grpc.insecure_channel(worker.address, options=CHANNEL_OPTIONS)
    try:
        stub = pb_grpc.InferenceStub(channel)
        sent = []

        def stalled():
            for message in request_messages({}, dicom_parts([i.path for i in study.instances])):
                sent.append(message)
                if len(sent) == 6:
                    time.sleep(30)  # stays mid-upload until the worker is killed
                yield message

        call = stub.Infer(stalled(), timeout=60)
        wait_for(lambda: any(p.name.startswith("part-") for p in spool.rglob("*")), timeout=10,
                 what="part files in the spool")
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        call.cancel()
        assert list(spool.rglob("part-*"))  # left behind by the kill
        worker = start_worker(tmp_path, "mock_model", "--spool-dir", str(spool), port=port, wait_serving=False)
        wait_for_health(worker)
        assert not list(spool.rglob("part-*"))
        assert "removed 1 spool folder(s)" in worker.log()
    finally:
        channel.close()
        worker.stop()


def test_aborted_uploads_and_downloads_leave_the_bridge_as_it_was(stack, study):
    """Clients that vanish mid-upload or mid-download: the bridge's memory stays flat over 1,000 of them
    (unshielded, an abandoned read of a worker call keeps ~15 KB per client gone mid-answer, +30% here:
    grpc/grpc#43360, service_runtime/grpc_aio.py),
    every connection is closed, and both services log each as a cancellation, at INFO, without a traceback.
    The body is over 1 MiB (an attachment pads it), so that it streams to the worker while it arrives: a
    smaller one is read whole before any call, and a client gone mid-upload never reaches the worker."""
    paths = [i.path for i in study.instances]
    body = http.hand_built_body([("application/json", json.dumps({"inference_command": "get-boolean-mask"}).encode())]
                                + [("application/octet-stream", bytes(SMALL_STUDY_BYTES))]
                                + [("application/dicom", p.read_bytes()) for p in paths], "b")
    assert len(body) > SMALL_STUDY_BYTES
    head = http.raw_post_head(body)
    pid = stack["bridge"].process.pid

    def rss() -> int:
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])

    def abort(count: int, first: int = 0) -> None:
        for index in range(first, first + count):
            with socket.create_connection(("127.0.0.1", stack["port"]), timeout=10) as sock:
                if index % 2:
                    sock.sendall(head + body[: len(body) // 2])  # gone mid-upload
                else:
                    sock.sendall(head + body)
                    sock.recv(100)  # gone mid-download
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    baseline = metric(stack["port"], "bridge_http_open_connections")  # counts this very /metrics request too
    abort(200)  # warm-up: allocator arenas and gRPC's buffers reach their working size
    wait_for(lambda: metric(stack["port"], "bridge_inflight_requests") == 0, timeout=10, what="aborts settled")
    before = rss()
    abort(1000)
    wait_for(lambda: metric(stack["port"], "bridge_inflight_requests") == 0, timeout=20, what="aborts settled")
    after = rss()
    assert after < before * 1.1, f"bridge RSS {before} kB -> {after} kB over 1,000 aborted requests"
    wait_for(lambda: metric(stack["port"], "bridge_http_open_connections") <= baseline, timeout=10,
             what="every aborted connection closed")
    # The same, 16 at a time: a hang-up whose end of stream reaches the worker before the cancellation is
    # still a cancellation, not the sender's malformed stream (it was, for about one abort in ten).
    already = len(stack["worker"].log())  # the module's other tests refuse bad input on purpose
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda index: abort(1, index), range(400)))
    wait_for(lambda: metric(stack["port"], "bridge_inflight_requests") == 0, timeout=20, what="aborts settled")
    assert "INVALID_ARGUMENT" not in stack["worker"].log()[already:]
    logs = stack["bridge"].log() + stack["worker"].log()
    at = min((i for i in (logs.find("Traceback"), logs.find("ERROR")) if i >= 0), default=-1)
    assert at < 0, logs[max(0, at - 300) : at + 3000]
    assert re.search(r"INFO worker\.inference .*the caller is gone \(cancelled\)", logs)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_a_series_mixing_image_sizes_is_a_400_naming_two_instances(stack, tmp_path):
    spec = SeriesSpec("mixed", rows=16, cols=16, count=1)
    first = make_dataset(study_uid="1.2.3", spec=spec, number=1, position=(0, 0, 0))
    spec.rows, spec.cols = 20, 24
    second = make_dataset(study_uid="1.2.3", spec=spec, number=2, position=(0, 0, 2))
    parts = [("application/json", json.dumps({"inference_command": "get-probability-mask"}).encode()),
             ("application/dicom", dicom_bytes(first)), ("application/dicom", dicom_bytes(second))]
    message = error_of(post_parts(stack["url"], parts), 400, "bad_request")
    assert "mixes image sizes" in message and "part 1" in message and "part 2" in message


def test_a_call_queued_behind_an_overrunning_model_says_so(tmp_path, study):
    """A model that ignores cancellation keeps its slot after its caller's 504; the next call, queued behind
    it, gets a 504 that says why, and the overrun is counted and logged with the overrunning request's tags."""
    metrics_port = free_port()
    worker = start_worker(tmp_path, "mock_model.faults:StubbornModel", "--metrics-listen",
                          f"127.0.0.1:{metrics_port}", env={"MOCK_INFER_SECONDS": "4"})
    bridge = start_bridge(tmp_path, worker.address, "--deadline-seconds", "1.5")
    url = f"http://{bridge.address}/"
    try:
        first = http.post_like_original_tool(url, {}, [study.instances[0].path], timeout=30)
        assert "--deadline-seconds" in error_of(first, 504, "deadline_exceeded")
        second = http.post_like_original_tool(url, {}, [study.instances[0].path], timeout=30)
        message = error_of(second, 504, "deadline_exceeded")
        assert "still running after their own callers gave up" in message and "is_cancelled" in message
        wait_for(lambda: "worker_model_overruns_total{model=\"stubborn_model\"} 1.0" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode(), timeout=10, what="the overrun")
        late = [line for line in worker.log().splitlines() if "the model returned after its call had ended" in line]
        assert len(late) == 1 and first.headers["X-Request-Id"] in late[0]  # said of the request that overran
        assert re.search(r"input_hash=[0-9a-f]{64}", late[0]), late[0]
    finally:
        bridge.stop()
        worker.stop()

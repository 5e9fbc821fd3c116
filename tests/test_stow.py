"""Sending the DICOM outputs to a PACS (STOW-RS, worker/serving/stow.py): against Orthanc's DICOMweb plugin through real
worker and bridge processes, and against a loopback HTTPS server that fails before it stores (retries, bearer
token, the CA given). The viewer's answer never waits for the store and never fails with it.
"""

from __future__ import annotations

import http.server
import io
import re
import ssl
import threading
import time

import pydicom
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.certificates import make_pki
from tests.http_helpers import parse_answer, post_like_original_tool
from tests.services import free_port, start_bridge, start_worker, wait_for
from tests.test_hounsfield import write_phantom
from tests.viewers import orthanc
from worker.serving.metrics import WorkerMetrics
from worker.serving.stow import StowConfig, StowSender


def metric(port: int, name: str, **labels) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_a_worker_stores_every_answer_s_dicom_objects_to_orthanc(tmp_path):
    phantom = write_phantom(tmp_path / "phantom")
    (tmp_path / "pacs-auth").write_text("arterys:s3cret\n")
    with orthanc(tmp_path, users={"arterys": "s3cret"}) as pacs:
        metrics_port = free_port()
        worker = start_worker(tmp_path, "example_models.hounsfield", "--stow-url", pacs.dicomweb,
                              "--stow-basic-auth-file", str(tmp_path / "pacs-auth"),
                              "--metrics-listen", f"127.0.0.1:{metrics_port}")
        bridge = start_bridge(tmp_path, worker.address)
        try:
            assert metric(metrics_port, "worker_stow_requests_total", outcome="stored") == 0
            response = post_like_original_tool(f"http://{bridge.address}/", {
                "inference_command": "segment-hounsfield", "output_formats": ["arterys", "dicom"]}, phantom,
                timeout=60)
            assert response.status_code == 200
            answer = parse_answer(response)
            produced = [(p, b) for p, b in zip(answer.json["parts"], answer.binaries, strict=True)
                        if p["binary_type"] == "dicom"]
            assert len(produced) == 3  # the SEG and two reports
            wait_for(lambda: metric(metrics_port, "worker_stow_requests_total", outcome="stored") == 1, 30,
                     "the store", service=worker)
            study_uid = pydicom.dcmread(phantom[0], stop_before_pixels=True).StudyInstanceUID
            for part, data in produced:
                sent = pydicom.dcmread(io.BytesIO(bytes(data)))
                found = pacs.qido(f"/studies/{study_uid}/series/{sent.SeriesInstanceUID}/instances")
                assert [i["00080018"]["Value"][0] for i in found] == [part["dicom_output"]["SOPInstanceUID"]]
                stored = pydicom.dcmread(io.BytesIO(pacs.wado_instance(study_uid, sent.SeriesInstanceUID,
                                                                        sent.SOPInstanceUID)))
                assert stored.SeriesDescription == sent.SeriesDescription and stored.Modality == sent.Modality
            lines = [line for line in worker.log().splitlines() if "STOW-RS" in line]
            (stored_line,) = [line for line in lines if "3 object(s) stored" in line]
            assert f"input_hash={answer.hashes.split(':')[0]}" in stored_line, stored_line  # the request's tags
            assert metric(metrics_port, "worker_stow_attempts_total", status="200") == 1
        finally:
            bridge.stop()
            worker.stop()


def test_a_pacs_that_cannot_be_reached_never_fails_or_delays_the_answer(tmp_path):
    phantom = write_phantom(tmp_path / "phantom")
    metrics_port = free_port()
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    worker = start_worker(tmp_path, "example_models.hounsfield", "--stow-url", closed, "--stow-retries", "1",
                          "--metrics-listen", f"127.0.0.1:{metrics_port}")
    bridge = start_bridge(tmp_path, worker.address)
    try:
        response = post_like_original_tool(f"http://{bridge.address}/", {
            "inference_command": "segment-hounsfield", "output_formats": ["dicom"]}, phantom, timeout=60)
        assert response.status_code == 200
        assert metric(metrics_port, "worker_stow_requests_total", outcome="failed") == 0  # the answer came first
        wait_for(lambda: metric(metrics_port, "worker_stow_requests_total", outcome="failed") == 1, 30,
                 "the store to fail", service=worker)
        assert metric(metrics_port, "worker_stow_attempts_total", status="error") == 2  # once, then one retry
        (failed,) = [line for line in worker.log().splitlines() if "not stored to" in line]
        assert " ERROR " in failed and "ConnectionError after 2 attempt(s)" in failed
        assert re.search(r"\[input_hash=[0-9a-f]{64} request_id=\w+", failed)  # the request's tags
        again = post_like_original_tool(f"http://{bridge.address}/", {
            "inference_command": "segment-hounsfield", "output_formats": ["dicom"]}, phantom, timeout=60)
        assert again.status_code == 200
    finally:
        bridge.stop()
        worker.stop()


class _Pacs(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first store, 200 to the next; keeps what it received."""

    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        status = 503 if len(self.received) == 1 else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_stores_are_retried_with_the_bearer_token_over_tls_checked_against_the_ca_given(tmp_path):
    pki = make_pki(tmp_path / "pki")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pacs)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "token").write_text("t0ken\n")
    metrics = WorkerMetrics()
    config = StowConfig(url=f"https://localhost:{server.server_address[1]}/dicom-web/", token_file=str(
        tmp_path / "token"), ca_file=str(pki.ca), retries=2, timeout_seconds=10)
    sender = StowSender(config, metrics)
    try:
        import worker.serving.stow

        worker.serving.stow.FIRST_BACKOFF = 0.1  # the test's own clock: 0.1 s before the retry
        started = time.monotonic()
        sender.submit([b"first object", memoryview(b"second object")])
        assert time.monotonic() - started < 0.5  # submit never waits for the PACS
        deadline = time.monotonic() + 20
        while metrics.stow_requests.labels("stored")._value.get() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metrics.stow_requests.labels("stored")._value.get() == 1
        assert [metrics.stow_attempts.labels(s)._value.get() for s in ("503", "200")] == [1, 1]
        (path, headers, body), _ = _Pacs.received
        assert path == "/dicom-web/studies"
        assert headers["Authorization"] == "Bearer t0ken"
        assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
        boundary = headers["Content-Type"].rsplit("=", 1)[1].encode()
        parts = [p for p in body.split(b"--" + boundary) if p.strip(b"-\r\n")]
        assert [p.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n") for p in parts] == [b"first object", b"second object"]
    finally:
        sender.close()
        server.shutdown()


@pytest.mark.parametrize("flags, message", [
    (["--stow-token-file", "/nonexistent"], "--stow-token-file /nonexistent: cannot read it"),
    (["--stow-url", "ftp://pacs"], "--stow-url must be an http:// or https:// URL"),
])
def test_a_stow_setting_that_cannot_work_stops_the_worker_at_start(flags, message):
    from worker.serving.config import parse_config

    with pytest.raises(SystemExit):
        parse_config(["--model", "mock_model", *flags])

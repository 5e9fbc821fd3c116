"""TLS on both hops, with certificates the test makes (tests/certificates.py): HTTPS on the bridge, TLS and
mutual TLS between bridge and worker, reflection off, the probe and /metrics over TLS. Real processes."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import grpc
import pytest
import requests
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from requests_toolbelt import MultipartEncoder

from service_runtime.native_log import LINES_PER_WINDOW
from tests import http_helpers as http
from tests.certificates import make_pki
from tests.dicom_factory import SeriesSpec, write_study
from tests.hostile import handshake_flood
from tests.services import ROOT, Service, free_port, spawn

TOKEN = "tls-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study") / "study", [SeriesSpec("ct", rows=16, cols=16, count=2)])


def secure_channel(port: int, pki, client=None, ca=None) -> grpc.Channel:
    pair = pki.client if client is None else client
    credentials = grpc.ssl_channel_credentials(
        (ca or pki.ca).read_bytes(), pair.key.read_bytes() if pair else None, pair.cert.read_bytes() if pair else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def health(channel: grpc.Channel) -> str:
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def start_tls_worker(tmp, pki, *extra: str) -> Service:
    port = free_port()
    worker = spawn(tmp, "worker", ["-m", "worker", "--model", "mock_model", "--listen", f"127.0.0.1:{port}",
                                   "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), *extra], port)
    with secure_channel(port, pki) as channel:
        wait(lambda: health(channel) == "SERVING", worker)
    return worker


def start_https_bridge(tmp, pki, worker: Service, *extra: str, ready: bool = True) -> Service:
    port = free_port()
    bridge = spawn(tmp, "bridge", ["-m", "bridge", "--worker", worker.address, "--listen", f"127.0.0.1:{port}",
                                   "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                                   "--worker-ca", str(pki.ca), *extra], port, env={"BRIDGE_TOKENS": TOKEN})
    url = f"https://127.0.0.1:{port}/healthcheck"
    wait(lambda: requests.get(url, verify=str(pki.ca), timeout=3).text.startswith("READY" if ready else "NOT READY"),
         bridge)
    return bridge


def wait(condition, service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if service.process.poll() is not None:
            raise AssertionError(f"exited with {service.process.returncode}:\n{service.log()}")
        try:
            if condition():
                return
        except (requests.ConnectionError, OSError):
            pass
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pki):
    tmp = tmp_path_factory.mktemp("tls")
    metrics_port = free_port()
    mtls = start_tls_worker(tmp, pki, "--tls-client-ca", str(pki.ca), "--no-reflection",
                            "--metrics-listen", f"127.0.0.1:{metrics_port}", "--metrics-tls")
    tls_only = start_tls_worker(tmp, pki)
    bridge = start_https_bridge(tmp, pki, mtls, "--worker-cert", str(pki.client.cert), "--worker-key",
                                str(pki.client.key), "--header-timeout", "1")
    services = [bridge, mtls, tls_only]
    yield {"mtls": mtls, "tls_only": tls_only, "bridge": bridge, "metrics_port": metrics_port, "tmp": tmp,
           "services": services}
    for service in services:
        service.stop()


def infer(port: int, study, pki, scheme: str = "https", **kwargs) -> requests.Response:
    fields = http.original_tool_fields({"inference_command": "get-bounding-box-2d"}, [i.path for i in study.instances])
    encoder = MultipartEncoder(fields=fields)
    headers = {"Content-Type": encoder.content_type.replace("form-data", "related"), "Authorization": f"Bearer {TOKEN}"}
    return requests.post(f"{scheme}://127.0.0.1:{port}/", data=encoder.to_string(), headers=headers,
                         verify=str(pki.ca), timeout=30, **kwargs)


def test_https_bridge_over_mutual_tls_to_the_worker(stack, study, pki):
    answer = http.parse_answer(infer(stack["bridge"].port, study, pki))
    assert answer.json["bounding_boxes_2d"]


def test_plaintext_http_to_the_https_bridge_fails_cleanly(stack, study, pki):
    bridge = stack["bridge"]
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{bridge.port}/ping", timeout=5)
    assert time.monotonic() - started < 5
    # The bridge goes on serving, and said nothing alarming about it.
    assert http.parse_answer(infer(bridge.port, study, pki)).json["bounding_boxes_2d"]
    assert "Traceback" not in bridge.log() and "ERROR" not in bridge.log()


def test_a_client_that_never_completes_the_tls_handshake_is_dropped(stack):
    """Silent and half-finished handshakes are dropped by the HTTP server (granian's TLS listener) after its
    own handshake timeout, 10 s: a fixed bound, not the header timeout (docs/security.md)."""
    port = stack["bridge"].port
    for first_bytes in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):  # nothing; a ClientHello's start
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(first_bytes)
            started = time.monotonic()
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 15


def test_the_worker_refuses_a_bridge_without_a_valid_client_certificate(stack, study, pki):
    tmp, mtls = stack["tmp"], stack["mtls"]
    no_cert = start_https_bridge(tmp, pki, mtls, ready=False)
    stranger = start_https_bridge(tmp, pki, mtls, "--worker-cert", str(pki.stranger.cert), "--worker-key",
                                  str(pki.stranger.key), ready=False)
    stack["services"] += [no_cert, stranger]
    for bridge in (no_cert, stranger):
        response = infer(bridge.port, study, pki)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "worker_unavailable"
        assert response.headers["Retry-After"]
    # The worker never saw a call, and logged nothing alarming about the refused handshakes: a warning naming
    # the peer and the reason, a few a minute (gRPC's own peerless line per attempt is not in the log).
    assert "Traceback" not in mtls.log() and " ERROR " not in mtls.log()
    assert re.search(r"WARNING worker\.handshake .* a handshake from ipv4:127\.0\.0\.1:\d+ failed: .*"
                     r"PEER_DID_NOT_RETURN_A_CERTIFICATE", mtls.log()), mtls.log()
    assert "Handshake failed with error" not in mtls.log()
    assert not re.search(r"^[IWEF]\d{4} ", mtls.log(), re.MULTILINE), mtls.log()  # gRPC's lines are records too
    # Each bridge says why it has no worker, in gRPC's words.
    for bridge in (no_cert, stranger):
        assert re.search(r"WARNING bridge\.workers .* worker target 127\.0\.0\.1:\d+ is not ready \(no worker can "
                         r"be reached; UNAVAILABLE: .*last error: ", bridge.log()), bridge.log()
    # Direct callers are refused the same way: a client certificate from another CA, or none.
    with secure_channel(mtls.port, pki, client=pki.stranger) as channel:
        assert health(channel) == "UNAVAILABLE"
    with secure_channel(mtls.port, pki, client=False) as channel:
        assert health(channel) == "UNAVAILABLE"


def test_a_tls_worker_refuses_plaintext(stack, pki):
    for worker in (stack["mtls"], stack["tls_only"]):
        with grpc.insecure_channel(worker.address) as channel:
            assert health(channel) == "UNAVAILABLE"
    # TLS without a client certificate is enough for a worker without --tls-client-ca.
    with secure_channel(stack["tls_only"].port, pki, client=False) as channel:
        assert health(channel) == "SERVING"


def list_services(channel: grpc.Channel) -> list[str] | str:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5)
    except grpc.RpcError as error:
        return error.code().name
    return sorted(service.name for service in response.list_services_response.service)


def test_reflection_can_be_turned_off(stack, pki):
    with secure_channel(stack["mtls"].port, pki) as channel:
        assert list_services(channel) == "UNIMPLEMENTED"
    with secure_channel(stack["tls_only"].port, pki) as channel:
        assert list_services(channel) == ["arterys.inference.v1.Inference", "grpc.health.v1.Health",
                                          "grpc.reflection.v1alpha.ServerReflection"]


def probe(port: int, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.probe", f"0.0.0.0:{port}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={"PATH": "", **env})


def test_the_probe_reaches_a_tls_worker_with_the_workers_own_settings(stack, pki):
    worker_env = {"WORKER_TLS_CERT": str(pki.server.cert), "WORKER_TLS_KEY": str(pki.server.key),
                  "WORKER_TLS_CLIENT_CA": str(pki.ca)}
    ok = probe(stack["mtls"].port, worker_env)
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
    plaintext = probe(stack["mtls"].port, {})
    assert plaintext.returncode == 1 and "--tls" in plaintext.stderr
    stranger = probe(stack["mtls"].port, {**worker_env, "WORKER_PROBE_CERT": str(pki.stranger.cert),
                                          "WORKER_PROBE_KEY": str(pki.stranger.key)})
    assert stranger.returncode == 1
    tls_only = probe(stack["tls_only"].port, {"WORKER_TLS_CERT": str(pki.server.cert),
                                              "WORKER_TLS_KEY": str(pki.server.key), "WORKER_PROBE_CA": str(pki.ca)})
    assert tls_only.returncode == 0, tls_only.stderr


def test_worker_metrics_over_https_with_a_client_certificate(stack, pki):
    url = f"https://127.0.0.1:{stack['metrics_port']}/metrics"
    client = (str(pki.client.cert), str(pki.client.key))
    assert "worker_model_loaded 1.0" in requests.get(url, verify=str(pki.ca), cert=client, timeout=5).text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, verify=str(pki.ca), timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{stack['metrics_port']}/metrics", timeout=5)


def test_testtool_over_https_with_a_private_ca(stack, study, pki, tmp_path):
    run = subprocess.run([sys.executable, "-m", "testtool", "-i", str(study.folder), "-p", str(stack["bridge"].port),
                          "-o", str(tmp_path), "-q", "--cacert", str(pki.ca), "--token", TOKEN],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "https://127.0.0.1" in run.stdout


@pytest.mark.parametrize(("service", "args", "needle"), [
    ("bridge", ["--tls-cert", "{server.cert}"], "--tls-cert and --tls-key go together"),
    ("bridge", ["--tls-cert", "{server.cert}", "--tls-key", "{client.key}"], "--tls-key"),
    ("bridge", ["--worker-ca", "{missing}"], "--worker-ca"),
    ("worker", ["--tls-cert", "{server.cert}", "--tls-key", "{stranger.key}"], "--tls-key"),
    ("worker", ["--tls-client-ca", "{ca}"], "--tls-client-ca needs --tls-cert"),
    ("worker", ["--tls-cert", "{server.key}", "--tls-key", "{server.key}"], "--tls-cert"),
])
def test_unusable_tls_files_stop_the_service_at_start(pki, tmp_path, service, args, needle):
    values = {"server": pki.server, "client": pki.client, "stranger": pki.stranger, "ca": pki.ca,
              "missing": tmp_path / "missing.pem"}
    argv = ["-m", service, *(a.format(**values) for a in args), "--listen", f"127.0.0.1:{free_port()}"]
    argv += ["--worker", "127.0.0.1:1"] if service == "bridge" else ["--model", "mock_model"]
    run = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert needle in run.stderr


@pytest.mark.parametrize(("flags", "reason"), [
    (["--worker-ca", "{other_ca}"], "CERTIFICATE_VERIFY_FAILED"),
    (["--worker-server-name", "not-the-worker"], "Hostname Verification Check failed"),
])
def test_a_bridge_that_cannot_trust_its_worker_says_why(stack, study, pki, tmp_path, flags, reason):
    """Row 12 of issue 18: such a bridge stayed NOT READY and answered 503 without ever logging why."""
    other_ca = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(other_ca)
    bridge = start_https_bridge(tmp_path, pki, stack["mtls"], *(f.format(other_ca=other_ca) for f in flags),
                                "--worker-cert", str(pki.client.cert), "--worker-key", str(pki.client.key),
                                ready=False)
    stack["services"].append(bridge)
    assert infer(bridge.port, study, pki).status_code == 503
    wait(lambda: re.search(rf"WARNING bridge\.workers .* is not ready \(no worker can be reached; .*{reason}",
                           bridge.log()), bridge)


def test_a_flood_of_failed_handshakes_is_a_few_lines_naming_the_peers(pki, tmp_path):
    worker = start_tls_worker(tmp_path, pki, "--tls-client-ca", str(pki.ca))
    try:
        handshake_flood(worker.port, 40)
        wait(lambda: worker.log().count("a handshake from") >= LINES_PER_WINDOW, worker)
        time.sleep(1)
        log = worker.log()
        assert log.count("a handshake from ipv4:127.0.0.1:") == LINES_PER_WINDOW, log  # 40 failed, 10 logged
        assert "HTTP_REQUEST" in log and "Handshake failed with error" not in log
    finally:
        worker.stop()
    # The others are counted when the minute is over (tests/test_logs.py checks that line with a clock).

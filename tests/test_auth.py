"""Bearer tokens on the bridge (bridge/auth.py): real worker and bridge processes, tokens from
BRIDGE_TOKENS and a token file, rotation by file change and by SIGHUP, the test tool's --token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from requests_toolbelt import MultipartEncoder

from bridge.auth import SETTLE_SECONDS
from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import ROOT, free_port, spawn, start_bridge, start_worker, wait_for_http

ENV_TOKENS = ("env-token-0123456789abcdef", "env-token-rotated-fedcba9876")
FILE_TOKEN = "file-token-00112233445566778899"
OPEN_ROUTES = ("/healthcheck", "/ping", "/healthz", "/readyz")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study") / "study", [SeriesSpec("ct", rows=16, cols=16, count=2)])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    token_file = tmp / "tokens"
    token_file.write_text(f"# rotated monthly\n{FILE_TOKEN}\n")
    worker = start_worker(tmp, "mock_model")
    env = {"BRIDGE_TOKENS": f"{ENV_TOKENS[0]}, {ENV_TOKENS[1]}"}
    # These tests poll with tokens that are not valid yet, hundreds of times: the lock-out of a guessing
    # address (tests/test_clients.py) is set out of their way.
    unlimited = ("--auth-failures-per-minute", "1000000")
    bridge = start_bridge(tmp, worker.address, "--token-file", str(token_file), *unlimited, env=env)
    open_metrics = start_bridge(tmp, worker.address, "--metrics-auth", "off", *unlimited, env=env)
    yield {"url": f"http://{bridge.address}", "open_metrics": f"http://{open_metrics.address}", "bridge": bridge,
           "token_file": token_file, "tmp": tmp}
    for service in (bridge, open_metrics, worker):
        service.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def infer(url: str, study, headers: dict | None = None) -> requests.Response:
    fields = http.original_tool_fields({"inference_command": "get-bounding-box-2d"}, [i.path for i in study.instances])
    encoder = MultipartEncoder(fields=fields)
    content_type = encoder.content_type.replace("multipart/form-data", "multipart/related")
    return requests.post(url + "/", data=encoder.to_string(), headers={**(headers or {}), "Content-Type": content_type},
                         timeout=30)


def assert_unauthorized(response: requests.Response, invalid_token: bool) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "unauthorized"
    expected = 'Bearer realm="arterys-bridge"' + (', error="invalid_token"' if invalid_token else "")
    assert response.headers["WWW-Authenticate"] == expected


def test_open_routes_need_no_token(stack):
    for route in OPEN_ROUTES:
        response = requests.get(stack["url"] + route, timeout=5)
        assert response.status_code == 200, (route, response.text)
    assert requests.post(stack["url"] + "/healthcheck", timeout=5).text == "READY"


def test_inference_without_a_valid_token_is_refused(stack, study):
    assert_unauthorized(infer(stack["url"], study), invalid_token=False)
    assert_unauthorized(infer(stack["url"], study, bearer("not-a-token-of-ours-at-all")), invalid_token=True)
    assert_unauthorized(infer(stack["url"], study, {"Authorization": f"Basic {ENV_TOKENS[0]}"}), invalid_token=False)
    assert_unauthorized(infer(stack["url"], study, bearer(ENV_TOKENS[0][:-1])), invalid_token=True)
    # The route table stays hidden: an unknown route is 401 too, not a 404 listing the routes.
    assert_unauthorized(requests.get(stack["url"] + "/nowhere", timeout=5), invalid_token=False)
    assert requests.get(stack["url"] + "/nowhere", headers=bearer(FILE_TOKEN), timeout=5).status_code == 404


@pytest.mark.parametrize("token", [*ENV_TOKENS, FILE_TOKEN])
def test_every_configured_token_is_accepted(stack, study, token):
    response = infer(stack["url"], study, bearer(token))
    answer = http.parse_answer(response)
    assert answer.json["bounding_boxes_2d"]


def test_metrics_are_protected_or_open_by_choice_and_count_401s(stack):
    assert_unauthorized(requests.get(stack["url"] + "/metrics", timeout=5), invalid_token=False)
    text = requests.get(stack["url"] + "/metrics", headers=bearer(ENV_TOKENS[1]), timeout=5).text
    assert 'bridge_http_requests_total{code="401",route="/"}' in text
    assert 'bridge_http_requests_total{code="401",route="/metrics"}' in text
    assert requests.get(stack["open_metrics"] + "/metrics", timeout=5).status_code == 200
    assert_unauthorized(requests.post(stack["open_metrics"] + "/", data=b"", timeout=5), invalid_token=False)


def test_the_token_file_is_reread_when_it_changes(stack):
    token_file, url = stack["token_file"], stack["url"] + "/metrics"
    new = "file-token-new-aabbccddeeff00112233"
    token_file.write_text(f"{FILE_TOKEN}\n{new}\n")
    wait_until(lambda: requests.get(url, headers=bearer(new), timeout=5).status_code == 200)
    token_file.write_text(f"{new}\n")  # the old one retired
    wait_until(lambda: requests.get(url, headers=bearer(FILE_TOKEN), timeout=5).status_code == 401)
    assert requests.get(url, headers=bearer(new), timeout=5).status_code == 200
    assert requests.get(url, headers=bearer(ENV_TOKENS[0]), timeout=5).status_code == 200  # env tokens stay
    # A file that disappears keeps the tokens in use (a half-finished deployment must not lock everyone out).
    token_file.unlink()
    time.sleep(1.5)
    assert requests.get(url, headers=bearer(new), timeout=5).status_code == 200
    token_file.write_text(f"{FILE_TOKEN}\n")
    wait_until(lambda: requests.get(url, headers=bearer(FILE_TOKEN), timeout=5).status_code == 200)


def test_sighup_rereads_the_token_file(stack):
    """A change that the file's inode, size and time do not show is only picked up by SIGHUP."""
    token_file, url = stack["token_file"], stack["url"] + "/metrics"
    before = os.stat(token_file)
    same_length = FILE_TOKEN[:-4] + "beef"
    with open(token_file, "r+") as handle:  # in place: same inode and size
        handle.write(f"{same_length}\n")
    os.utime(token_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)  # past the bridge's check interval: the stamp did not change, so no reload
    assert requests.get(url, headers=bearer(same_length), timeout=5).status_code == 401
    stack["bridge"].process.send_signal(signal.SIGHUP)
    wait_until(lambda: requests.get(url, headers=bearer(same_length), timeout=5).status_code == 200)
    assert stack["bridge"].process.poll() is None
    assert "reloaded" in stack["bridge"].log()


def test_tokens_never_reach_the_log(stack, study):
    infer(stack["url"], study, bearer("wrong-token-that-must-not-be-logged"))
    log = stack["bridge"].log()
    assert "POST / -> 401" in log
    for token in (*ENV_TOKENS, FILE_TOKEN, "wrong-token-that-must-not-be-logged"):
        assert token not in log


def test_testtool_sends_its_token(stack, study, tmp_path):
    port = stack["url"].rsplit(":", 1)[1]
    argv = [sys.executable, "-m", "testtool", "-i", str(study.folder), "-p", port, "-o", str(tmp_path / "out"),
            "-c", "get-bounding-box-2d", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "TESTTOOL_TOKEN"}
    refused = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "401" in refused.stderr and "bearer token" in refused.stderr, refused.stderr
    by_env = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**env, "TESTTOOL_TOKEN": ENV_TOKENS[1]})
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    by_flag = subprocess.run([*argv, "--token", ENV_TOKENS[0]], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env=env)
    assert by_flag.returncode == 0, by_flag.stdout + by_flag.stderr


def test_a_missing_token_file_stops_the_bridge_at_start(tmp_path):
    port = free_port()
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge", "--worker", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}",
                                        "--token-file", str(tmp_path / "absent")], port)
    assert bridge.process.wait(30) == 2
    assert "--token-file" in bridge.log() and "No such file" in bridge.log()


def test_without_tokens_every_route_stays_open(tmp_path, study):
    worker = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, worker.address, env={"BRIDGE_TOKENS": ""})
    try:
        wait_for_http(bridge, "/metrics", None)
        assert http.parse_answer(infer(f"http://{bridge.address}", study)).json["bounding_boxes_2d"]
    finally:
        bridge.stop()
        worker.stop()


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_a_half_written_token_file_keeps_the_tokens_in_use(stack):
    """Row 10 of issue 18: a file flushed half-written (`tok-ne`, the rest 1.2 s later) gave the fragment a 200.
    The file is read only once complete: ending with a line break (or unchanged for SETTLE_SECONDS)."""
    token_file, url = stack["token_file"], stack["url"] + "/metrics"
    token_file.write_text(f"{FILE_TOKEN}\n")
    wait_until(lambda: requests.get(url, headers=bearer(FILE_TOKEN), timeout=5).status_code == 200)
    slow = "file-token-written-slowly-0123456789"
    with open(token_file, "w") as handle:  # in place, as an editor or a shell redirection writes: truncate, write
        handle.write(slow[:6])
        handle.flush()
        time.sleep(2.5)  # two checks of the bridge's, the file half-written
        assert requests.get(url, headers=bearer(slow[:6]), timeout=5).status_code == 401
        assert requests.get(url, headers=bearer(FILE_TOKEN), timeout=5).status_code == 200  # still in use
        handle.write(slow[6:] + "\n")
    wait_until(lambda: requests.get(url, headers=bearer(slow), timeout=5).status_code == 200)
    assert requests.get(url, headers=bearer(FILE_TOKEN), timeout=5).status_code == 401
    assert "is not complete yet" in stack["bridge"].log()


def test_a_token_file_replaced_atomically_or_without_a_final_line_break(stack):
    token_file, url = stack["token_file"], stack["url"] + "/metrics"
    replaced = "file-token-replaced-atomically-abcdef"
    staging = token_file.with_name("tokens.new")
    staging.write_text(f"{replaced}\n")
    os.replace(staging, token_file)  # what docs/security.md recommends: the bridge never sees a partial file
    wait_until(lambda: requests.get(url, headers=bearer(replaced), timeout=5).status_code == 200)
    bare = "file-token-without-a-line-break-0011"
    token_file.write_text(bare)  # taken as complete once unchanged for SETTLE_SECONDS
    time.sleep(1.5)
    assert requests.get(url, headers=bearer(bare), timeout=5).status_code == 401
    wait_until(lambda: requests.get(url, headers=bearer(bare), timeout=5).status_code == 200,
               timeout=SETTLE_SECONDS + 5)
    token_file.write_text(f"{FILE_TOKEN}\n")
    wait_until(lambda: requests.get(url, headers=bearer(FILE_TOKEN), timeout=5).status_code == 200)

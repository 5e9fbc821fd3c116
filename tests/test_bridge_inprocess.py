"""The bridge in-process: `bridge.server.create_server` on port 0 in front of an in-process worker, for
routes, translation and the error table without starting processes (the process-level tests are in
test_bridge_e2e.py, test_bridge_errors.py and test_hostile_clients.py)."""

from __future__ import annotations

import json

import pytest
import requests

from bridge.config import BridgeConfig
from bridge.server import create_server
from mock_model import MockModel
from mock_model.faults import FailingModel
from tests import http_helpers as http
from tests.conftest import start_worker
from tests.models import UnprocessableModel
from tests.services import wait_for

COMMANDS = MockModel.commands


@pytest.fixture(scope="module")
def bridge(standard_study):
    workers = {"/": start_worker(MockModel(), model="mock_model"), "/failing": start_worker(FailingModel()),
               "/unprocessable": start_worker(UnprocessableModel())}
    routes = {route: f"127.0.0.1:{worker.port}" for route, worker in workers.items()}
    server = create_server(BridgeConfig(routes=routes, listen="127.0.0.1:0"))
    url = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: requests.get(url + "/healthcheck", timeout=5).text == "READY", what="READY")
    yield url
    server.stop(0)
    for worker in workers.values():
        worker.stop(0)


def test_service_routes_and_methods(bridge):
    assert requests.get(bridge + "/healthcheck").text == "READY"
    assert requests.post(bridge + "/ping").status_code == 200
    assert requests.get(bridge + "/healthz").text == "ok"
    assert requests.get(bridge + "/readyz").status_code == 200
    assert "bridge_http_requests_total" in requests.get(bridge + "/metrics").text
    assert requests.get(bridge + "/nowhere").json()["error"]["code"] == "not_found"
    assert requests.get(bridge + "/").json()["error"]["code"] == "method_not_allowed"
    assert requests.post(bridge + "/healthz").json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_answer_is_translated_and_hashed_exactly(bridge, standard_study, command):
    paths = [i.path for i in standard_study.instances]
    request = {"inference_command": command, "free": {"kept": [1, 2.5, "x"]}}
    answer = http.parse_answer(http.post_like_original_tool(bridge + "/", request, paths))
    assert answer.hashes == http.expected_hashes_line(http.request_part_contents(request, paths), answer)
    assert len(answer.binaries) == len(answer.json["parts"])
    for part, content_type in zip(answer.json["parts"], answer.content_types, strict=True):
        assert content_type == ("application/dicom" if part["binary_type"].startswith("dicom") else
                                "application/binary")


@pytest.mark.parametrize(("route", "body", "status", "code"), [
    ("/", http.hand_built_body([("application/json", b"[1]")], "b"), 400, "bad_request"),
    ("/", http.hand_built_body([("application/json", json.dumps({"inference_command": "nope"}).encode())], "b"),
     400, "bad_request"),
    ("/failing", None, 500, "model_error"),
    ("/unprocessable", None, 422, "unprocessable_study"),
])
def test_worker_failures_map_to_the_error_table(bridge, standard_study, route, body, status, code):
    if body is None:
        response = http.post_like_original_tool(bridge + route, {}, [standard_study.instances[0].path])
    else:
        response = requests.post(bridge + route, data=body, headers={"Content-Type": "multipart/related; boundary=b"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"] == response.headers["X-Request-Id"]


def test_unsupported_media_type(bridge):
    response = requests.post(bridge + "/", data=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "multipart/related" in response.json()["error"]["message"]


def test_every_routes_error_series_exists_before_its_first_error():
    """A counter series that first appears at 1 shows no increase to rate(): the first 502 of a route would
    be invisible to the error-ratio alert. Every inference route starts with its series at 0."""
    server = create_server(BridgeConfig(routes={"/": "127.0.0.1:1", "/seg": "127.0.0.1:1"}, listen="127.0.0.1:0"))
    try:
        text = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    finally:
        server.stop(0)
    for route in ("/", "/seg"):
        for code in ("200", "400", "499", "500", "502", "503", "504"):
            assert f'bridge_http_requests_total{{code="{code}",route="{route}"}} 0.0' in text, (route, code)

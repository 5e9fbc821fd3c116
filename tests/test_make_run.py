"""`make run`, the first command of the README: worker and bridge start together, the bridge says READY
once the model is loaded, a request is answered, and Ctrl-C stops both cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests import http_helpers as http
from tests.dicom_factory import write_standard_study
from tests.services import ROOT, free_port


def without_service_variables() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BRIDGE_"))}


def test_make_run_serves_and_stops_on_ctrl_c(tmp_path):
    study = write_standard_study(tmp_path / "study")
    http_port, worker_port, metrics_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "make-run.log"
    # The services' own variables, from the environment (`BRIDGE_LISTEN=... make run`), as the README says.
    environment = {**without_service_variables(), "PYTHONUNBUFFERED": "1", "BRIDGE_LISTEN": f"127.0.0.1:{http_port}",
                   "WORKER_LISTEN": f"127.0.0.1:{worker_port}", "WORKER_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                   "WORKER_MODEL": "mock_model"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group, like a shell job
            env=environment,
        )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        status = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = requests.get(url + "/healthcheck", timeout=2).text
            except requests.ConnectionError:
                status = ""
            if status == "READY":
                break
            time.sleep(0.2)
        assert status == "READY", log_path.read_text(errors="replace")
        assert f"bridge on http://127.0.0.1:{http_port}" in log_path.read_text(errors="replace")

        response = http.post_like_original_tool(url + "/", {}, [i.path for i in study.instances])
        answer = http.parse_answer(response)
        assert len(answer.json["bounding_boxes_2d"]) == len(study.series)  # the mock model's default command
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "worker_model_loaded 1.0" in metrics

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the whole job
        process.wait(timeout=60)  # make itself reports the interrupt (exit -2); its children must stop cleanly
        log = log_path.read_text(errors="replace")
        assert "worker stopped" in log and "bridge stopped" in log, log
        for port in (http_port, worker_port, metrics_port):
            with pytest.raises(ConnectionError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_make_run_with_the_http_port_taken_fails_in_a_few_clear_lines():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_address = f"127.0.0.1:{taken.getsockname()[1]}"
        run = subprocess.run(
            ["make", "--no-print-directory", "run", f"BRIDGE_LISTEN={http_address}",  # a make variable works too
             f"WORKER_LISTEN=127.0.0.1:{free_port()}", f"WORKER_METRICS_LISTEN=127.0.0.1:{free_port()}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env=without_service_variables(),
        )
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert f"bridge: cannot listen on {http_address}: " in output and "address already in use" in output.lower()
    assert "make run: the bridge stopped (its message is above), so both are stopped" in output
    assert "Traceback" not in output
    assert "bridge on http" not in output  # nothing claims the bridge is up
    assert "] Error 2" in output  # the bridge's own status, not the worker's SIGTERM


def test_make_run_does_not_take_another_servers_answer_for_its_own_bridge():
    """Another service already answering /ping where the bridge should listen (another `make run`): the
    "up" line must not be printed on the strength of that other service's answer."""

    class Ping(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        http_address = f"127.0.0.1:{other.server_address[1]}"
        run = subprocess.run(
            ["make", "--no-print-directory", "run", f"BRIDGE_LISTEN={http_address}",
             f"WORKER_LISTEN=127.0.0.1:{free_port()}", f"WORKER_METRICS_LISTEN=127.0.0.1:{free_port()}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env=without_service_variables(),
        )
    finally:
        other.shutdown()
        other.server_close()
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"make run: something already answers on http://{http_address}" in output
    assert "bridge on http" not in output and "Traceback" not in output

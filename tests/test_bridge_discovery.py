"""New worker replicas get traffic soon after they appear in DNS, not after the connections age out.

The bridge's target is a DNS name (`dns:///worker:50051`, a headless Service or a compose service) that
gRPC resolves again only when a connection ends; it never polls. Workers therefore end every connection
after WORKER_MAX_CONNECTION_AGE_SECONDS (calls in flight finish on it), and each end makes the bridge
resolve the name again. Here two real workers listen on 127.0.0.2 and 127.0.0.3 (same port), a DNS server
of the test answers first with one, then with both, and the second must start receiving calls; the bridge's
bridge_ready_workers gauge follows. And when a call fails, the bridge's log says on which worker.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.dns_server import dns_server
from tests.http_helpers import post_like_original_tool
from tests.services import free_port, spawn, wait_for, wait_for_http

NAME = "workers.arterys.test"
AGE_SECONDS = 3  # short here, so the test is quick; the mechanism is the same at the default


def inferences(metrics_port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("worker_inferences_total{"))


def ready_workers(bridge_port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{bridge_port}/metrics", timeout=5).text
    (value,) = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith('bridge_ready_workers{route="/"}')]
    return value


def start_worker(tmp_path, host: str, port: int, metrics_port: int):
    worker = spawn(tmp_path, "worker", ["-m", "worker", "--model", "mock_model", "--listen", f"{host}:{port}",
                                        "--metrics-listen", f"127.0.0.1:{metrics_port}"], port,
                   {"WORKER_MAX_CONNECTION_AGE_SECONDS": str(AGE_SECONDS)})
    wait_for(lambda: "loaded; serving" in worker.log(), 60, "the worker's model to load", interval=0.1,
             service=worker)
    return worker


@pytest.mark.timeout(180)
def test_a_worker_added_to_dns_gets_calls_once_connections_recycle(tmp_path, standard_study):
    port = free_port()
    first_metrics, second_metrics = free_port(), free_port()
    files = [instance.path for instance in standard_study.instances][:2]
    with dns_server(NAME, ["127.0.0.2"]) as dns:
        first = start_worker(tmp_path, "127.0.0.2", port, first_metrics)
        second = start_worker(tmp_path, "127.0.0.3", port, second_metrics)
        bridge = spawn(tmp_path, "bridge", ["-m", "bridge", "--worker", dns.target(port), "--listen",
                                            f"127.0.0.1:{(bridge_port := free_port())}"], bridge_port)
        try:
            wait_for_http(bridge, "/healthcheck", "READY", 60)
            url = f"http://127.0.0.1:{bridge_port}/"

            def infer() -> None:
                answer = post_like_original_tool(url, {"inference_command": "get-bounding-box-2d"}, files, timeout=30)
                assert answer.status_code == 200, answer.text

            for _ in range(4):
                infer()
            assert inferences(second_metrics) == 0  # not in DNS yet: unknown to the bridge
            wait_for(lambda: ready_workers(bridge_port) == 1, 20, "bridge_ready_workers 1", interval=0.2)
            dns.addresses = ["127.0.0.2", "127.0.0.3"]
            added = time.monotonic()

            def second_served() -> bool:
                infer()
                return inferences(second_metrics) > 0

            # Connections end every AGE_SECONDS; the bound only keeps a broken mechanism from hanging the test.
            wait_for(second_served, 20 * AGE_SECONDS, "the added worker to receive calls", interval=0.2)
            print(f"the added worker received its first call {time.monotonic() - added:.1f} s after DNS named it "
                  f"(connection age {AGE_SECONDS} s)")
            served_before = inferences(first_metrics)
            for _ in range(6):
                infer()
            assert inferences(first_metrics) > served_before  # round_robin over both now
            wait_for(lambda: ready_workers(bridge_port) == 2, 20, "bridge_ready_workers 2", interval=0.2)
            second.stop()  # capacity lost: the route's gauge says so (the alert ArterysWorkersBelowUsual)
            wait_for(lambda: ready_workers(bridge_port) == 1, 20, "bridge_ready_workers 1 again", interval=0.2)
        finally:
            bridge.stop()
            first.stop()
            second.stop()


def test_the_bridge_log_names_the_worker_a_failed_call_was_on(tmp_path, standard_study):
    """A worker killed in the middle of an inference: the bridge's warning says which worker it was (its host
    name, which the worker sends with the admission: a pod's or a container's name)."""
    port, metrics_port = free_port(), free_port()
    worker = spawn(tmp_path, "worker", ["-m", "worker", "--model", "mock_model.faults:SlowModel", "--listen",
                                        f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"], port,
                   {"MOCK_INFER_SECONDS": "30"})
    wait_for(lambda: "loaded; serving" in worker.log(), 60, "the worker's model to load", interval=0.1, service=worker)
    bridge_port = free_port()
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge", "--worker", f"127.0.0.1:{port}", "--listen",
                                        f"127.0.0.1:{bridge_port}"], bridge_port)
    files = [instance.path for instance in standard_study.instances][:2]
    try:
        wait_for_http(bridge, "/healthcheck", "READY", 60)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(post_like_original_tool, f"http://127.0.0.1:{bridge_port}/",
                                 {"inference_command": "get-bounding-box-2d"}, files, timeout=60)
            wait_for(lambda: "worker_inflight_inferences 1.0" in requests.get(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text, 30, "the model to run", interval=0.1)
            worker.process.kill()
            assert answer.result().status_code in (502, 503)
        line = wait_for(lambda: next((line for line in bridge.log().splitlines() if " WARNING " in line
                                      and "UNAVAILABLE" in line), None), 10, "the bridge's warning", service=bridge)
        assert f"(worker {socket.gethostname()})" in line, bridge.log()
    finally:
        bridge.stop()
        worker.stop()

"""A request that finds every worker full calls each worker at most once and waits, parked at the last one, for
a place (issue 18: it used to call the same full workers dozens of times, for up to --queue-wait-seconds).

Real processes: workers with one model slot and no queue, kept busy by slow requests; the worker calls each
request made are counted from the workers' own log lines (at DEBUG, each refused call and each received study
is one line with the request's id), and parked calls from their worker_parked_calls gauge.
"""

from __future__ import annotations

import collections
import re
import threading

import grpc
import pytest

from contract import inference_pb2 as pb
from tests import http_helpers as http
from tests.dicom_factory import write_standard_study
from tests.services import free_port, start_bridge, start_worker, wait_for
from tests.test_bridge_discovery import ready_workers
from tests.test_bridge_errors import error_of, instances
from tests.test_hostile_clients import metric

# A worker's lines for one call of a request: refused before admission, or admitted and its study received.
CALL_LINE = re.compile(r"request_id=(\S+) .*\] (?:inference failed \(RESOURCE_EXHAUSTED\)|received \d+ instance)")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("study") / "study")


def busy_worker(tmp_path, seconds: float):
    """A worker with one model slot and no queue, whose model takes `seconds`; logging every call."""
    metrics_port = free_port()
    worker = start_worker(tmp_path, "mock_model.faults:SlowModel", "--concurrency", "1", "--queue-size", "0",
                          "--metrics-listen", f"127.0.0.1:{metrics_port}",
                          env={"MOCK_INFER_SECONDS": str(seconds), "LOG_LEVEL": "DEBUG"})
    worker.metrics_port = metrics_port
    return worker


def in_background(url: str, study, request_id: str, results: dict) -> threading.Thread:
    def send() -> None:
        results[request_id] = http.post_like_original_tool(url, {}, instances(study), timeout=60,
                                                           headers={"X-Request-Id": request_id})

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def calls_per_worker(workers) -> dict[str, list[int]]:
    """Request id -> the calls it made to each worker, in the workers' order."""
    calls: dict[str, list[int]] = collections.defaultdict(lambda: [0] * len(workers))
    for index, worker in enumerate(workers):
        for request_id in CALL_LINE.findall(worker.log()):
            calls[request_id][index] += 1
    return dict(calls)


def total(workers, name: str) -> float:
    return sum(metric(worker.metrics_port, name) for worker in workers)


def test_a_request_finding_every_worker_full_calls_each_once_and_is_served_when_one_frees(tmp_path, study):
    workers = [busy_worker(tmp_path, 4) for _ in range(2)]
    bridge = start_bridge(tmp_path, f"ipv4:{workers[0].address},{workers[1].address}")
    url = f"http://{bridge.address}/"
    results: dict = {}
    threads = []
    try:
        wait_for(lambda: ready_workers(bridge.port) == 2, 20, "the bridge to count both workers", interval=0.2)
        threads.append(in_background(url, study, "first", results))
        wait_for(lambda: total(workers, "worker_inflight_inferences") == 1, 20, "the first request in a model")
        threads.append(in_background(url, study, "second", results))
        wait_for(lambda: total(workers, "worker_inflight_inferences") == 2, 20, "both models busy")
        threads.append(in_background(url, study, "third", results))
        # Both full: the third request's last call waits at its worker, asking nothing more meanwhile.
        wait_for(lambda: total(workers, "worker_parked_calls") == 1, 20, "the third request parked at a worker")
        for thread in threads:
            thread.join(60)
        assert [results[name].status_code for name in ("first", "second", "third")] == [200, 200, 200]
        calls = calls_per_worker(workers)
        assert calls["third"] == [1, 1], calls  # refused at once by one, parked at the other, then served
        assert all(count <= 1 for request in calls.values() for count in request), calls
        assert total(workers, "worker_parked_calls") == 0
    finally:
        for thread in threads:
            thread.join(60)
        bridge.stop()
        for worker in workers:
            worker.stop()


def test_a_request_that_finds_no_place_within_the_queue_wait_is_503_worker_busy(tmp_path, study):
    worker = busy_worker(tmp_path, 6)
    bridge = start_bridge(tmp_path, worker.address, "--queue-wait-seconds", "1")
    url = f"http://{bridge.address}/"
    results: dict = {}
    first = None
    try:
        first = in_background(url, study, "first", results)
        wait_for(lambda: metric(worker.metrics_port, "worker_inflight_inferences") == 1, 20, "the model busy")
        refused = http.post_like_original_tool(url, {}, instances(study), timeout=60,
                                               headers={"X-Request-Id": "refused"})
        message = error_of(refused, 503, "worker_busy")
        assert message.startswith("the worker is busy: 1 inference(s) running and 0 waiting for the model")
        assert int(refused.headers["Retry-After"]) > 0
        assert calls_per_worker([worker])["refused"] == [1]  # parked once, refused when the wait ended
        assert metric(worker.metrics_port, "worker_parked_calls") == 0
        # The bridge wrote one line about the request's worker calls: the refusal, saying how many it made.
        lines = [line for line in bridge.log().splitlines() if "request_id=refused" in line and "bridge.inference"
                 in line]
        assert len(lines) == 1 and "(1 call to the target's workers)" in lines[0], lines
        first.join(60)
        assert results["first"].status_code == 200
    finally:
        if first is not None:
            first.join(60)
        bridge.stop()
        worker.stop()


def test_a_caller_that_leaves_while_parked_is_forgotten(tmp_path, study):
    worker = busy_worker(tmp_path, 3)
    bridge = start_bridge(tmp_path, worker.address)
    url = f"http://{bridge.address}/"
    results: dict = {}
    first = None
    channel = grpc.insecure_channel(worker.address)
    try:
        first = in_background(url, study, "first", results)
        wait_for(lambda: metric(worker.metrics_port, "worker_inflight_inferences") == 1, 20, "the model busy")
        header = pb.RequestHeader(request_json=b"{}", request_id="leaves", admission_wait_ms=60_000)
        leaving = channel.stream_stream("/arterys.inference.v1.Inference/Infer",
                                        request_serializer=pb.InferRequest.SerializeToString,
                                        response_deserializer=pb.InferResponse.FromString)(
            iter([pb.InferRequest(header=header)]), timeout=60)
        wait_for(lambda: metric(worker.metrics_port, "worker_parked_calls") == 1, 20, "the direct call parked")
        leaving.cancel()
        wait_for(lambda: metric(worker.metrics_port, "worker_parked_calls") == 0, 20, "the parked call forgotten")
        first.join(60)
        # The place the first request gives back is not kept for the caller that left.
        assert http.post_like_original_tool(url, {}, instances(study), timeout=60).status_code == 200
        assert re.search(r"request_id=leaves .*the caller is gone \(cancelled\) while waiting for a place",
                         worker.log())
    finally:
        if first is not None:
            first.join(60)
        channel.close()
        bridge.stop()
        worker.stop()


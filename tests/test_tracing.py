"""Tracing: real `python -m bridge` and `python -m worker` processes exporting OTLP to a collector in the test.

One request is one trace across both services (the client's trace when it sent a traceparent), with the
parent/child links of bridge request -> gRPC call -> worker call -> stages -> the model's own span; the
request's log lines carry its trace id; the worker's spans arrive by the flush on SIGTERM. Off (the
default), nothing is exported, yet a client's traceparent still tags both services' log lines.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from service_runtime.tracing import enabled_by, passed_on, trace_id_of
from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.otlp_collector import Collector, Span
from tests.services import ROOT, free_port, start_bridge, start_worker

RPC = "arterys.inference.v1.Inference/Infer"
STAGES = ("receive", "queue", "infer", "check", "send")
CLIENT_TRACE, CLIENT_PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
UNSAMPLED_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("traced") / "study", [SeriesSpec("ct", rows=16, cols=16, count=2)])


def post(bridge, study, command: str, request_id: str, traceparent: str | None = None) -> requests.Response:
    headers = {"X-Request-Id": request_id, **({"traceparent": traceparent} if traceparent else {})}
    return http.post_like_original_tool(f"http://{bridge.address}/", {"inference_command": command},
                                        [i.path for i in study.instances], headers=headers, timeout=30)


def request_lines(log: str, request_id: str) -> list[str]:
    return [line for line in log.splitlines() if f"request_id={request_id} " in line]


def assert_logged_with(service, request_id: str, trace_id: str, *texts: str) -> None:
    lines = request_lines(service.log(), request_id)
    assert lines, f"no log line of {request_id}:\n{service.log()}"
    assert all(f" trace_id={trace_id}]" in line for line in lines), "\n".join(lines)
    for text in texts:
        assert any(text in line for line in lines), f"no line with {text!r}:\n" + "\n".join(lines)


def bridge_request_span(spans: list[Span], request_id: str) -> Span:
    (span,) = [s for s in spans if s.service == "arterys-bridge" and s.kind == "SERVER"
               and s.attributes.get("arterys.request_id") == request_id]
    return span


def trace_tree(spans: list[Span], request_id: str, stages=STAGES) -> dict[str, Span]:
    """The spans of one request's trace by name, checked to form bridge -> call -> worker -> stages -> model."""
    server = bridge_request_span(spans, request_id)
    mine = [s for s in spans if s.trace_id == server.trace_id]
    named = {("worker " if s.service == "arterys-worker" else "bridge ") + s.name: s for s in mine}
    assert len(named) == len(mine), "a span name came twice in one trace"
    assert set(named) == {"bridge POST /", f"bridge {RPC}", f"worker {RPC}", "worker model.forward",
                          *(f"worker {stage}" for stage in stages)}
    client, call = named[f"bridge {RPC}"], named[f"worker {RPC}"]
    assert (client.kind, client.parent_id, client.protocol) == ("CLIENT", server.span_id, "http")
    assert (call.kind, call.parent_id, call.protocol) == ("SERVER", client.span_id, "grpc")
    for stage in stages:
        assert named[f"worker {stage}"].parent_id == call.span_id
    assert named["worker model.forward"].parent_id == named["worker infer"].span_id
    # Each span ends after the work it covers: the request's once its answer has been written.
    assert server.start_ns <= client.start_ns <= call.start_ns <= call.end_ns <= client.end_ns <= server.end_ns
    return named


def test_one_request_is_one_trace_across_bridge_and_worker(tmp_path, study):
    with Collector() as collector:
        # The worker: an endpoint alone turns tracing on (OTLP/gRPC, the SDK's default protocol). Its batch delay
        # is long, so its spans can only arrive by the flush on SIGTERM. The bridge: OTLP/HTTP, exported at once.
        worker = start_worker(tmp_path, "tests.models:TracedModel", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test", "LOG_LEVEL": "DEBUG"})
        bridge = start_bridge(tmp_path, worker.address, env={
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
        try:
            joined = post(bridge, study, "trace", "joined", f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01")
            fresh = post(bridge, study, "trace", "fresh")
            unsampled = post(bridge, study, "trace", "unsampled", f"00-{UNSAMPLED_TRACE}-{CLIENT_PARENT}-00")
            failed = post(bridge, study, "fail", "failed")
            assert [r.status_code for r in (joined, fresh, unsampled, failed)] == [200, 200, 200, 500]

            def bridge_requests(spans):
                return [s for s in spans if s.service == "arterys-bridge" and s.kind == "SERVER"]

            collector.wait_for(lambda spans: len(bridge_requests(spans)) >= 3)
            assert not [s for s in collector.snapshot() if s.service == "arterys-worker"]
            assert worker.stop() == 0
            spans = collector.snapshot()  # the worker exported before it exited
        finally:
            bridge.stop()
            worker.stop()

    # The client's trace continues: the bridge's request span is the child of the client's span.
    tree = trace_tree(spans, "joined")
    server, call = tree["bridge POST /"], tree[f"worker {RPC}"]
    assert (server.trace_id, server.parent_id) == (CLIENT_TRACE, CLIENT_PARENT)
    assert server.attributes["http.request.method"] == "POST" and server.attributes["http.route"] == "/"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.response.body.size"] == len(joined.content)
    assert server.attributes["http.request.body.size"] > sum(i.path.stat().st_size for i in study.instances)
    input_hash = http.parse_answer(joined).hashes.split(":")[0]
    assert server.attributes["arterys.input_hash"] == call.attributes["arterys.input_hash"] == input_hash
    assert call.attributes["arterys.model.name"] == "traced" and call.attributes["arterys.command"] == "trace"
    assert call.attributes["arterys.outcome"] == "ok" and call.attributes["arterys.instance_count"] == 2
    assert call.attributes["rpc.grpc.status_code"] == 0
    assert tree["worker model.forward"].attributes["model.instances"] == 2
    assert {s.status for s in tree.values()} == {"UNSET"}
    assert server.service == "arterys-bridge" and call.resource["deployment.environment.name"] == "test"
    assert_logged_with(bridge, "joined", CLIENT_TRACE, "POST / -> 200")
    assert_logged_with(worker, "joined", CLIENT_TRACE, "received 2 instance(s)", "traced model inferring")

    # No traceparent: a new trace, the same one in both services and both logs.
    tree = trace_tree(spans, "fresh")
    server = tree["bridge POST /"]
    assert server.parent_id == "" and server.trace_id not in (CLIENT_TRACE, "0" * 32)
    assert_logged_with(bridge, "fresh", server.trace_id, "POST / -> 200")
    assert_logged_with(worker, "fresh", server.trace_id, "traced model inferring")

    # A client that does not sample: nothing recorded (the default parent-based sampler), the logs still tagged.
    assert not [s for s in spans if s.trace_id == UNSAMPLED_TRACE]
    assert_logged_with(bridge, "unsampled", UNSAMPLED_TRACE, "POST / -> 200")
    assert_logged_with(worker, "unsampled", UNSAMPLED_TRACE, "traced model inferring")

    # The model raised: an error from the model's span up to the bridge's request (500).
    tree = trace_tree(spans, "failed", stages=("receive", "queue", "infer"))
    assert tree["worker infer"].status == "ERROR" and "exception" in tree["worker infer"].events
    assert tree["worker model.forward"].status == "ERROR"
    assert tree[f"worker {RPC}"].attributes["arterys.outcome"] == "model_error"
    assert tree[f"worker {RPC}"].status == tree[f"bridge {RPC}"].status == "ERROR"
    assert tree["bridge POST /"].status == "ERROR"
    assert tree["bridge POST /"].attributes["http.response.status_code"] == 500
    assert_logged_with(worker, "failed", tree["bridge POST /"].trace_id, "the model raised")


def test_off_nothing_is_exported_yet_the_clients_trace_id_tags_both_logs(tmp_path, study):
    with Collector() as collector:
        # An endpoint is set, but OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER=none win: tracing stays off.
        worker = start_worker(tmp_path, "tests.models:TracedModel", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_SDK_DISABLED": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50", "LOG_LEVEL": "DEBUG"})
        bridge = start_bridge(tmp_path, worker.address, env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_TRACES_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "50"})
        try:
            answers = [post(bridge, study, "trace", "sent", f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"),
                       post(bridge, study, "trace", "none"),
                       post(bridge, study, "trace", "zeros", f"00-{'0' * 32}-{CLIENT_PARENT}-01")]
            assert [a.status_code for a in answers] == [200, 200, 200]
        finally:
            assert bridge.stop() == 0 and worker.stop() == 0
        assert collector.snapshot() == []
    for service in (bridge, worker):
        assert "tracing on" not in service.log()
        assert_logged_with(service, "sent", CLIENT_TRACE, "traced model inferring" if service is worker else "POST /")
        assert_logged_with(service, "none", "-")
        assert_logged_with(service, "zeros", "-")


def test_tracing_settings_the_sdk_refuses_stop_the_bridge_at_once(tmp_path):
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
    result = subprocess.run([sys.executable, "-m", "bridge", "--worker", "127.0.0.1:1",
                             "--listen", f"127.0.0.1:{free_port()}"], cwd=ROOT, env={**_base_env(), **env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Unsupported OTLP protocol 'carrier-pigeon'" in result.stderr


def _base_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BRIDGE_"))}


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # no exporter named, no endpoint
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "false"}, True),
])
def test_the_rule_for_on(env, on):
    assert enabled_by(env) is on


@pytest.mark.parametrize(("traceparent", "trace_id"), [
    (f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01", CLIENT_TRACE),
    (f" 00-{CLIENT_TRACE}-{CLIENT_PARENT}-00 ", CLIENT_TRACE),
    (f"01-{CLIENT_TRACE}-{CLIENT_PARENT}-01-later-fields", CLIENT_TRACE),  # a later version may add fields
    (f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01-extra", ""),
    (f"ff-{CLIENT_TRACE}-{CLIENT_PARENT}-01", ""),
    (f"00-{CLIENT_TRACE.upper()}-{CLIENT_PARENT}-01", ""),
    (f"00-{'0' * 32}-{CLIENT_PARENT}-01", ""),
    (f"00-{CLIENT_TRACE}-{'0' * 16}-01", ""),
    (f"00-{CLIENT_TRACE[:-1]}-{CLIENT_PARENT}-01", ""),
    ("", ""),
    ("x] FAKE [trace_id=" + CLIENT_TRACE, ""),
])
def test_a_traceparent_gives_its_trace_id_only_when_valid(traceparent, trace_id):
    assert trace_id_of(traceparent) == trace_id


def test_with_tracing_off_the_traceparent_is_passed_on_unchanged():
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    assert passed_on(traceparent, "vendor=a") == (CLIENT_TRACE, (("traceparent", traceparent),
                                                                ("tracestate", "vendor=a")))
    assert passed_on(traceparent, "x" * 600) == (CLIENT_TRACE, (("traceparent", traceparent),))
    assert passed_on("garbage", "vendor=a") == ("", ())

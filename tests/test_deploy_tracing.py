"""deploy/compose/tracing.yml and deploy/k8s/components/tracing: every variable they add is one the
OpenTelemetry SDK reads (the services' --help names none of them: the SDK reads OTEL_*), the endpoint names
the collector they wire, and the services started with that environment (the collector's host moved to a
collector in the test) send one trace of both services.
"""

from __future__ import annotations

import os
import re
import subprocess

import kubernetes_validate
import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml

from tests import http_helpers as http
from tests.deploy_files import DOCKERFILES, dockerfile_env, interpolate, load_compose
from tests.dicom_factory import SeriesSpec, write_study
from tests.otlp_collector import Collector
from tests.services import ROOT, free_port, spawn, wait_for_health, wait_for_http
from tests.test_deploy_k8s import K8S, KUBERNETES_VERSION, container, render

OVERRIDE = ROOT / "deploy/compose/tracing.yml"
SDK_VARIABLES = {getattr(module, name) for module in (opentelemetry.sdk.environment_variables,
                                                      opentelemetry.environment_variables)
                 for name in dir(module) if name.startswith("OTEL_")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    series = [SeriesSpec("ct", rows=16, cols=16, count=1)]
    return write_study(tmp_path_factory.mktemp("deploy-traced") / "study", series)


def assert_sdk_variables(added: dict, service: str) -> None:
    """What tracing adds to a service: OTEL_* names the SDK defines, and none of the service's own."""
    assert any(name == "OTEL_EXPORTER_OTLP_ENDPOINT" for name in added), f"{service}: no endpoint, tracing stays off"
    for name in added:
        assert name in SDK_VARIABLES or name.startswith("K8S_"), f"{service}: {name} is read by nothing"


def traced_request(tmp_path, study, worker_env: dict, bridge_env: dict, collector: Collector) -> list:
    """Worker and bridge with these environments (hosts on loopback, the OTLP endpoint the test's collector):
    one request, then both stopped; returns the spans received."""
    worker_port, bridge_port = free_port(), free_port()
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint}
    worker_env = {**worker_env, **endpoint, "WORKER_LISTEN": f"127.0.0.1:{worker_port}", "WORKER_METRICS_LISTEN": "",
                  "WORKER_SPOOL_DIR": str(tmp_path), "HOME": str(tmp_path), "WORKER_MODEL": "mock_model"}
    bridge_env = {**bridge_env, **endpoint, "BRIDGE_LISTEN": f"127.0.0.1:{bridge_port}",
                  "BRIDGE_WORKER": re.sub(r"worker:\d+$", f"localhost:{worker_port}", bridge_env["BRIDGE_WORKER"])}
    worker = spawn(tmp_path, "worker", ["-m", "worker"], worker_port, worker_env)
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge"], bridge_port, bridge_env)
    try:
        wait_for_health(worker)
        wait_for_http(bridge, "/healthcheck", "READY")
        answer = http.post_like_original_tool(f"http://127.0.0.1:{bridge_port}/", {}, [study.instances[0].path],
                                              timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        assert bridge.stop() == 0 and worker.stop() == 0  # both flush their spans on SIGTERM
    spans = collector.snapshot()
    (request,) = [s for s in spans if s.service == "arterys-bridge" and s.kind == "SERVER"]
    assert {s.service for s in spans if s.trace_id == request.trace_id} == {"arterys-bridge", "arterys-worker"}
    return spans


# ---------------------------------------------------------------------------------------------- compose


def test_compose_override_sends_the_spans_of_both_services_to_its_collector(tmp_path, study):
    compose, override = load_compose(), yaml.safe_load(OVERRIDE.read_text())
    assert set(override["services"]) == {"worker", "bridge", "jaeger"}
    collector = override["services"]["jaeger"]
    assert collector["ports"] == ["127.0.0.1:16686:16686"]  # the UI, loopback only; OTLP stays in the network
    environments = {}
    for name in ("worker", "bridge"):
        added = {k: str(interpolate(v)) for k, v in override["services"][name]["environment"].items()}
        assert_sdk_variables(added, name)
        host, port = re.fullmatch(r"http://([\w.-]+):(\d+)", added["OTEL_EXPORTER_OTLP_ENDPOINT"]).groups()
        assert host == "jaeger" and port in collector["expose"]
        assert set(override["services"][name]) == {"environment"}  # nothing else of the service changes
        environments[name] = {k: str(interpolate(v)) for k, v in {
            **dockerfile_env(DOCKERFILES[name]), **compose["services"][name]["environment"], **added}.items()}
    with Collector() as otlp:
        spans = traced_request(tmp_path, study, environments["worker"], environments["bridge"], otlp)
    assert {s.resource["deployment.environment.name"] for s in spans} == {"compose"}


# ------------------------------------------------------------------------------------------- Kubernetes


COLLECTOR_PATCH = {  # the overlay's patch that deploy/k8s/components/tracing/kustomization.yaml documents
    "target": {"kind": "ConfigMap", "name": "arterys-tracing"},
    "patch": '- {op: replace, path: /data/OTEL_EXPORTER_OTLP_ENDPOINT, value: "http://my-collector.telemetry:4317"}',
}


def render_with_component(tmp_path, patches: list) -> dict:
    """The base with the tracing component, as an operator's overlay adds it."""
    overlay = tmp_path / "overlay"
    overlay.mkdir(exist_ok=True)
    relative = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "arterys",
        "resources": [f"{relative}/base"], "components": [f"{relative}/components/tracing"], "patches": patches}))
    result = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(result.stdout) if doc}


def kubelet_environment(spec: dict, config_maps: dict, pod_name: str) -> dict[str, str]:
    """A container's environment as the kubelet gives it: envFrom first, then env with the downward API and
    $(NAME) of the variables before."""
    fields = {"metadata.name": pod_name, "metadata.namespace": "arterys"}
    out: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        out.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in spec["env"]:
        if "valueFrom" in variable:
            out[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            out[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out[m.group(1)], variable["value"])
    return out


def test_kubernetes_component_sends_the_spans_of_both_services(tmp_path, study):
    base = {(doc["kind"], doc["metadata"]["name"]): doc for doc in render("base")}
    traced = render_with_component(tmp_path, [])
    for doc in traced.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    config_maps = {name: doc for (kind, name), doc in traced.items() if kind == "ConfigMap"}
    (config_map,) = config_maps.values()
    assert set(traced) - set(base) == {("ConfigMap", config_map["metadata"]["name"])}
    assert config_map["metadata"]["namespace"] == "arterys"
    host = re.fullmatch(r"http://([\w.-]+):4317", config_map["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"])[1]
    assert host.endswith(".svc.cluster.local")  # a collector's Service in another namespace
    environments = {}
    for name in ("worker", "bridge"):
        before, after = container(base["Deployment", name]), container(traced["Deployment", name])
        assert after["env"][:len(before["env"])] == before["env"]  # added, nothing changed
        added = {**config_map["data"], **{v["name"]: v for v in after["env"][len(before["env"]):]}}
        assert_sdk_variables(added, name)
        environments[name] = kubelet_environment(after, config_maps, f"{name}-7d9f-abcde")
        assert environments[name]["OTEL_RESOURCE_ATTRIBUTES"] == (
            f"k8s.pod.name={name}-7d9f-abcde,k8s.namespace.name=arterys")
    with Collector() as otlp:
        spans = traced_request(tmp_path, study, environments["worker"], environments["bridge"], otlp)
    assert {s.resource["k8s.pod.name"] for s in spans} == {"worker-7d9f-abcde", "bridge-7d9f-abcde"}
    assert {s.resource["k8s.namespace.name"] for s in spans} == {"arterys"}


def test_kubernetes_component_points_at_your_collector_with_the_documented_patch(tmp_path):
    traced = render_with_component(tmp_path, [COLLECTOR_PATCH])
    (config_map,) = [doc for (kind, _), doc in traced.items() if kind == "ConfigMap"]
    assert config_map["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://my-collector.telemetry:4317"
    for name in ("worker", "bridge"):  # renamed by its new hash, and every reference with it
        assert container(traced["Deployment", name])["envFrom"] == [
            {"configMapRef": {"name": config_map["metadata"]["name"]}}]

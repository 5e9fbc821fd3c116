"""deploy/prometheus checked by promtool, and its service discovery checked against what it must find.

promtool checks the configurations and rules and runs the rules' unit tests (rules.test.yml). The
compose configuration must point at the compose services' metrics ports; the Kubernetes one must keep
exactly one target per pod of deploy/k8s, on its metrics port, with the same job names.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.monitoring import PROMETHEUS_DIR, promtool, require_tool
from tests.services import ROOT

KUBERNETES_CONFIG = PROMETHEUS_DIR / "prometheus-kubernetes.yml"


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-tls.yml"])
def test_shipped_compose_configurations_pass_promtool(name):
    result = promtool("check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    assert "rules.yml" in config["rule_files"]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["bridge", "worker"]  # rules and dashboard


def test_kubernetes_configuration_passes_promtool(tmp_path):
    """Debian's Prometheus is built without Kubernetes discovery, so its promtool refuses
    `kubernetes_sd_configs`: the file is checked whole where the tool supports it, and otherwise with
    that one block swapped for a static target, which still checks every relabelling rule and regex."""
    result = promtool("check", "config", str(KUBERNETES_CONFIG))
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        config = yaml.safe_load(KUBERNETES_CONFIG.read_text())
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["static_configs"] = [{"targets": ["pod:1"]}]
        config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        (tmp_path / "k8s.yml").write_text(yaml.safe_dump(config))
        result = promtool("check", "config", str(tmp_path / "k8s.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_promtool_check():
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass():
    result = promtool("test", "rules", "rules.test.yml")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_rules_cover_what_operators_page_on():
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    records = {rule["record"] for rule in rules if "record" in rule}
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    # Request rate, error ratio and p95 latency, per route and per model.
    for record in ("route:bridge_http_requests:rate5m", "route:bridge_http_errors:ratio_rate5m",
                   "route:bridge_http_request_duration_seconds:p95_5m", "model:worker_inferences:rate5m",
                   "model:worker_inference_failures:ratio_rate5m",
                   "model_stage:worker_inference_duration_seconds:p95_5m"):
        assert record in records
    assert {"ArterysNoReadyWorker", "ArterysHighErrorRatio", "ArterysWorkerQueueSaturated",
            "ArterysHighLatencyP95"} <= set(alerts)
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        assert re.fullmatch(r"\d+m", alert["for"]), name
    # Every alert is unit-tested in rules.test.yml, firing at least once.
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == set(alerts)


def test_compose_configuration_scrapes_the_compose_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"bridge", "worker"}
    metrics_port = int(compose["worker"]["environment"]["WORKER_METRICS_LISTEN"].rsplit(":", 1)[1])
    bridge_port = int(compose["bridge"]["environment"]["BRIDGE_LISTEN"].rsplit(":", 1)[1])
    # DNS discovery of the service name: every replica of a scaled service is a target.
    assert jobs["worker"]["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": metrics_port,
                                                 "refresh_interval": "15s"}]
    assert str(metrics_port) in compose["worker"]["expose"]
    assert jobs["bridge"]["dns_sd_configs"][0]["names"] == ["bridge"]
    assert jobs["bridge"]["dns_sd_configs"][0]["port"] == bridge_port
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"


# ------------------------------------------------------------------------ Kubernetes pod discovery


def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (actions keep, drop, replace), enough to run a shipped config's rules
    on the meta labels Kubernetes pod discovery would produce. None when the target is dropped."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)  # Prometheus anchors its regexes
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
    return labels


def pod_meta_labels(deployment: dict, namespace: str, ip: str) -> list[dict[str, str]]:
    """One label set per declared container port, as Prometheus's pod role yields them."""
    template = deployment["spec"]["template"]

    def sanitize(name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", name)

    common = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_ip": ip,
              "__meta_kubernetes_pod_name": f"{deployment['metadata']['name']}-abc12",
              "__meta_kubernetes_pod_node_name": "node-1", "__meta_kubernetes_pod_phase": "Running"}
    common |= {f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in template["metadata"]["labels"].items()}
    common |= {f"__meta_kubernetes_pod_annotation_{sanitize(k)}": v
               for k, v in template["metadata"].get("annotations", {}).items()}
    return [common | {"__address__": f"{ip}:{port['containerPort']}",
                      "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                      "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}
            for container in template["spec"]["containers"] for port in container.get("ports", [])]


def test_kubernetes_configuration_finds_one_target_per_pod_on_its_metrics_port():
    config = yaml.safe_load(KUBERNETES_CONFIG.read_text())
    deployments = {name: yaml.safe_load((ROOT / f"deploy/k8s/base/{name}-deployment.yaml").read_text())
                   for name in ("worker", "bridge")}
    # Another team's pod in the same cluster, annotated for scraping: not ours, not scraped.
    stranger = {"metadata": {"name": "other"}, "spec": {"template": {
        "metadata": {"labels": {"app.kubernetes.io/name": "worker"}, "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {"containers": [{"name": "x", "ports": [{"name": "metrics", "containerPort": 9464}]}]}}}}
    pods = {"worker": ("10.0.0.1", deployments["worker"]), "bridge": ("10.0.0.2", deployments["bridge"]),
            "other": ("10.0.0.3", stranger)}
    found = {}
    for job in config["scrape_configs"]:
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
        for pod, (ip, deployment) in pods.items():
            for labels in pod_meta_labels(deployment, "arterys", ip):
                target = relabel(labels, job["relabel_configs"])
                if target is not None:
                    found.setdefault(job["job_name"], []).append((pod, target))
    assert set(found) == {"worker", "bridge"}
    (worker_pod, worker), = found["worker"]
    (bridge_pod, bridge), = found["bridge"]
    assert (worker_pod, bridge_pod) == ("worker", "bridge")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, target in (("worker", worker), ("bridge", bridge)):
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        # The port and path also announced by annotation, for annotation-based setups.
        assert target["__address__"].endswith(":" + annotations["prometheus.io/port"])
        assert annotations["prometheus.io/path"] == target.get("__metrics_path__",
                                                               jobs[name].get("metrics_path", "/metrics"))
        assert target["namespace"] == "arterys" and target["pod"].endswith("-abc12")
    env = {e["name"]: e["value"] for e in deployments["worker"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert worker["__address__"] == "10.0.0.1:" + env["WORKER_METRICS_LISTEN"].rsplit(":", 1)[1]


def test_relabel_follows_prometheus_semantics():
    rules = [{"source_labels": ["a", "b"], "regex": "(x);(\\d+)", "replacement": "$1:${2}", "target_label": "c"},
             {"source_labels": ["c"], "regex": "x:1", "action": "keep"}]
    assert relabel({"a": "x", "b": "1"}, rules)["c"] == "x:1"
    assert relabel({"a": "x", "b": "2"}, rules) is None
    assert relabel({"a": "xx", "b": "1"}, rules) is None  # anchored: "xx" does not match "(x)"


def test_prometheus_binary_runs():
    """The server the live test starts is there (and says its version), not only promtool."""
    result = subprocess.run([require_tool("prometheus"), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "prometheus, version" in result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted(PROMETHEUS_DIR.glob("*.yml")))
def test_prometheus_files_are_yaml(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)

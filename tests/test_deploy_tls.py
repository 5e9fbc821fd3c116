"""deploy/compose/tls.yml and deploy/k8s/components/tls: consistent with the code, and the services started
with their environment (certificates made here by trustme, at the paths the files mount) answer their
health checks and an inference over HTTPS with mutual TLS behind it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import requests
import yaml

from bridge.probe import readyz_url
from tests.certificates import make_pki
from tests.deploy_files import interpolate, load_compose
from tests.monitoring import loopback_config, prometheus_server
from tests.services import ROOT, Service, environment_variables, free_port, spawn
from tests.test_deploy_k8s import KUBERNETES_VERSION, container, env, pod_spec, render
from worker.probe import build_parser as probe_parser

TOKEN = "deploy-tls-token-0123456789abcdef"


def read_variables(service: str) -> set[str]:
    names = environment_variables(service)
    if service == "worker":  # the health check (python -m worker.probe) runs with the worker's environment
        names |= set(re.findall(r"\[([A-Z][A-Z0-9_]+)", probe_parser().format_help()))
    return names


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict[str, Path]:
    """The files both examples name, under their names there, made by a private CA."""
    folder = tmp_path_factory.mktemp("secrets")
    pki = make_pki(folder / "pki")
    files = {"ca.crt": pki.ca, "worker.crt": pki.server.cert, "worker.key": pki.server.key,
             "bridge-https.crt": pki.server.cert, "bridge-https.key": pki.server.key,
             "bridge-client.crt": pki.client.cert, "bridge-client.key": pki.client.key}
    out = {}
    for name, source in files.items():
        out[name] = folder / name
        shutil.copy(source, out[name])
    out["bridge-tokens"] = folder / "bridge-tokens"
    out["bridge-tokens"].write_text(f"# one token a line\n{TOKEN}\n")
    return out


def run_stack(tmp: Path, worker_env: dict, bridge_env: dict, worker_check: list[str], bridge_check: list[str],
              ca: Path, then: Callable[[int], None] | None = None) -> None:
    """Starts both with these environments (hosts moved to loopback), runs their health checks, infers, then
    calls `then(bridge port)`."""
    worker_port, bridge_port = free_port(), free_port()
    worker_env = {**worker_env, "WORKER_LISTEN": f"127.0.0.1:{worker_port}", "WORKER_METRICS_LISTEN": "",
                  "WORKER_SPOOL_DIR": str(tmp), "WORKER_MODEL": "mock_model", "HOME": str(tmp)}
    bridge_env = {**bridge_env, "BRIDGE_LISTEN": f"127.0.0.1:{bridge_port}",
                  "BRIDGE_WORKER": re.sub(r"worker:\d+$", f"localhost:{worker_port}", bridge_env["BRIDGE_WORKER"])}
    worker = spawn(tmp, "worker", ["-m", "worker"], worker_port, worker_env)
    bridge = spawn(tmp, "bridge", ["-m", "bridge"], bridge_port, bridge_env)
    try:
        wait_until_healthy(worker, worker_check, worker_env)
        wait_until_healthy(bridge, bridge_check, bridge_env)
        body = b'--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n'
        headers = {"Content-Type": "multipart/related; boundary=b"}
        url = f"https://127.0.0.1:{bridge_port}/"
        assert requests.post(url, data=body, headers=headers, verify=str(ca), timeout=10).status_code == 401
        answer = requests.post(url, data=body, headers={**headers, "Authorization": f"Bearer {TOKEN}"},
                               verify=str(ca), timeout=10)
        # Through mutual TLS to the model, which refuses a study without instances: its own 400.
        assert answer.status_code == 400 and "no DICOM instance" in answer.text, answer.text
        if then is not None:
            then(bridge_port)
    finally:
        bridge.stop()
        worker.stop()


def wait_until_healthy(service: Service, check: list[str], env: dict, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        run = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, env={**env, "PATH": ""}, timeout=30)
        if run.returncode == 0:
            return
        assert service.process.poll() is None, service.log()
        assert time.monotonic() < deadline, f"{check} failed: {run.stdout}{run.stderr}\n{service.log()}"
        time.sleep(0.3)


def as_local(command: list[str]) -> list[str]:
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


# ---------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def override() -> dict:
    return yaml.safe_load((ROOT / "deploy/compose/tls.yml").read_text())


def test_compose_override_mounts_every_file_it_names(override):
    defined = override["secrets"]
    for name, secret in defined.items():
        assert secret["file"] == f"./deploy/compose/secrets/{name}"  # relative to the repository root
    for name in ("worker", "bridge"):
        service = override["services"][name]
        mounted = set(service["secrets"])
        assert mounted <= set(defined)
        read = read_variables(name)
        for variable, value in service["environment"].items():
            assert variable in read, f"{variable} is never read by {name}"
            if str(value).startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in mounted, value
    # The secrets folder keeps nothing but its .gitignore in git.
    ignored = (ROOT / "deploy/compose/secrets/.gitignore").read_text().split()
    assert "*" in ignored and "!.gitignore" in ignored
    assert "ports" not in override["services"]["worker"]  # still scalable


def test_compose_services_with_tls_answer_their_health_checks_and_infer(override, secrets, tmp_path):
    base = load_compose()["services"]
    envs = {}
    for name in ("worker", "bridge"):
        merged = {**base[name]["environment"], **override["services"][name]["environment"]}
        envs[name] = {k: str(interpolate(v)).replace("/run/secrets/", str(secrets["ca.crt"].parent) + "/")
                      for k, v in merged.items()}
    worker_check = as_local(base["worker"]["healthcheck"]["test"][1:])
    # The base files' health checks: they follow the TLS settings (podman-compose would join two `test` lists).
    assert not any("healthcheck" in service for service in override["services"].values())
    bridge_check = as_local(base["bridge"]["healthcheck"]["test"][1:])

    def scraped_by_the_overrides_prometheus(bridge_port: int) -> None:
        """The monitoring profile under this override reads prometheus-tls.yml: a real Prometheus with it
        scrapes the HTTPS bridge (with the plain configuration the target was down)."""
        command = override["services"]["prometheus"]["command"]
        name = next(a for a in command if a.startswith("--config.file=")).rpartition("/")[2]
        config = loopback_config({"bridge": [f"127.0.0.1:{bridge_port}"], "worker": [f"127.0.0.1:{free_port()}"]},
                                 name)
        with prometheus_server(tmp_path / "prometheus", config) as prometheus:
            prometheus.wait_for('up{job="bridge"}', lambda values: values == [1.0])
            prometheus.wait_for("bridge_http_requests_total", lambda values: sum(values) >= 2)

    run_stack(tmp_path, envs["worker"], envs["bridge"], worker_check, bridge_check, secrets["ca.crt"],
              then=scraped_by_the_overrides_prometheus)


# ------------------------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def rendered() -> dict:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render("overlays/tls")}


def test_tls_overlay_is_valid_for_a_current_kubernetes(rendered):
    for (kind, name), doc in rendered.items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{kind}/{name}: {error.message} at {'.'.join(str(p) for p in error.path)}")
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == "arterys"


def secret_paths(deployment: dict) -> dict[str, str]:
    """mount path -> Secret name, for the Secret volumes of a Deployment's container."""
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    return {m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
            for m in container(deployment)["volumeMounts"] if "secret" in volumes[m["name"]]}


def test_tls_component_wires_secrets_probes_and_policies(rendered):
    worker, bridge = rendered["Deployment", "worker"], rendered["Deployment", "bridge"]
    for name, deployment in (("worker", worker), ("bridge", bridge)):
        read = read_variables(name)
        mounts = secret_paths(deployment)
        for variable, value in env(deployment).items():
            assert variable in read or variable == "HOME", f"{variable} is never read by {name}"
            if value.startswith("/etc/arterys/"):
                assert str(Path(value).parent) in mounts, value
        for mount in container(deployment)["volumeMounts"]:
            if mount["mountPath"] in mounts:
                assert mount["readOnly"]
    # Native gRPC probes cannot speak TLS: exec probes with the worker's own settings.
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container(worker)[kind]["exec"]["command"] == ["python", "-m", "worker.probe"]
        assert "grpc" not in container(worker)[kind]
        assert container(bridge)[kind]["httpGet"]["scheme"] == "HTTPS"
    assert env(worker)["WORKER_REFLECTION"] == "0"
    (port,) = rendered["Service", "bridge"]["spec"]["ports"]
    assert port["appProtocol"] == "https"
    # Only bridges reach the workers' gRPC port.
    policy = rendered["NetworkPolicy", "worker-ingress"]["spec"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= worker_labels.items()
    grpc_rule = next(rule for rule in policy["ingress"] if rule["ports"] == [{"port": "grpc"}])
    (source,) = grpc_rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= bridge["spec"]["template"]["metadata"]["labels"].items()
    assert "grpc" in {p["name"] for p in container(worker)["ports"]}


def test_kubernetes_services_with_tls_answer_their_probes_and_infer(rendered, secrets, tmp_path):
    """Secrets laid out as Kubernetes mounts them (tls.crt, tls.key, ca.crt, tokens), the manifests'
    environment pointing there, the exec probe run as the kubelet runs it."""
    layout = {"worker-tls": {"tls.crt": "worker.crt", "tls.key": "worker.key"}, "arterys-ca": {"ca.crt": "ca.crt"},
              "bridge-client-tls": {"tls.crt": "bridge-client.crt", "tls.key": "bridge-client.key"},
              "bridge-https-tls": {"tls.crt": "bridge-https.crt", "tls.key": "bridge-https.key"},
              "bridge-tokens": {"tokens": "bridge-tokens"}}
    envs = {}
    for name in ("worker", "bridge"):
        deployment = rendered["Deployment", name]
        variables = env(deployment)
        for mount, secret in secret_paths(deployment).items():
            folder = tmp_path / "mounts" / mount.strip("/")
            folder.mkdir(parents=True, exist_ok=True)
            for key, source in layout[secret].items():
                shutil.copy(secrets[source], folder / key)
            variables = {k: v.replace(mount + "/", str(folder) + "/") for k, v in variables.items()}
        envs[name] = variables
    worker_check = as_local(container(rendered["Deployment", "worker"])["livenessProbe"]["exec"]["command"])
    path = container(rendered["Deployment", "bridge"])["readinessProbe"]["httpGet"]["path"]
    # The kubelet's HTTPS probe checks no certificate, as bridge.probe does; it asks the same path.
    assert path == urlsplit(readyz_url({"BRIDGE_TLS_CERT": "x"})).path
    bridge_check = [sys.executable, "-m", "bridge.probe"]
    run_stack(tmp_path, envs["worker"], envs["bridge"], worker_check, bridge_check, secrets["ca.crt"])

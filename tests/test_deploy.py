"""docker-compose.yml and the Dockerfiles: consistent with the code, and their processes run as configured.

No Docker engine runs on these machines, so the same commands and environment the containers use are
started directly, on loopback: the services, and the compose health checks themselves.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.deploy_files import (
    CORE_SERVICES,
    DOCKERFILES,
    PYTHON_IMAGE,
    DockerIgnore,
    copy_sources,
    dockerfile_env,
    dockerfile_instructions,
    interpolate,
    load_compose,
    project_version,
)
from tests.services import ROOT, environment_variables, free_port, spawn, wait_for_health, wait_for_http

# What each image runs: its entry points and the modules they load (the worker's mock model too).
IMAGE_MODULES = {"bridge": "bridge.__main__,bridge.server,bridge.app",
                 "worker": "worker.__main__,worker.serving.server,worker.probe,mock_model,mock_model.faults"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def duration_seconds(value: str) -> float:
    """A Compose duration such as 300s, 5m or 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_services_are_scalable_and_wired(compose):
    services = compose["services"]
    core = {name for name, service in services.items() if not service.get("profiles")}
    assert core == set(CORE_SERVICES)
    worker, bridge = services["worker"], services["bridge"]
    # Scaling needs no fixed name and no host port on the worker.
    assert "container_name" not in worker and "ports" not in worker
    listen_port = worker["environment"]["WORKER_LISTEN"].rsplit(":", 1)[1]
    assert listen_port in worker["expose"]
    # The bridge resolves the service name to every replica (dns:///), round_robin does the rest.
    assert bridge["environment"]["BRIDGE_WORKER"] == f"dns:///worker:{listen_port}"
    (published,) = bridge["ports"]
    assert interpolate(published) == "8900:8900"
    assert interpolate(published, {"HTTP_PUBLISH": "127.0.0.1:18900"}) == "127.0.0.1:18900:8900"
    for name in CORE_SERVICES:
        service = services[name]
        assert Path(ROOT / service["build"]["context"], service["build"]["dockerfile"]) == DOCKERFILES[name]
        # Built images get a known name: images for other models are built FROM the worker's. Their tag is the
        # project's version, the one deploy/k8s names too (tests/test_deploy_k8s.py).
        assert interpolate(service["image"]) == f"arterys-grpc-bridge/{name}:{project_version()}"
        assert interpolate(service["image"], {"IMAGE_TAG": "2.0.0"}) == f"arterys-grpc-bridge/{name}:2.0.0"
        # The base image: fully qualified by default, replaceable (a registry mirror, docker/python-base-image.sh).
        base = service["build"]["args"]["PYTHON_IMAGE"]
        assert interpolate(base) == PYTHON_IMAGE
        assert interpolate(base, {"PYTHON_IMAGE": "mirror.example/python:3.11"}) == "mirror.example/python:3.11"
        assert service["restart"] == "unless-stopped"


def test_compose_waits_for_loaded_models_and_drains_on_stop(compose):
    services = compose["services"]
    worker, bridge = services["worker"], services["bridge"]
    # The bridge starts once the workers are healthy, i.e. their model has loaded.
    assert bridge["depends_on"] == {"worker": {"condition": "service_healthy"}}
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.probe"]
    # The start period is configurable and long enough for a real model by default.
    start_period = worker["healthcheck"]["start_period"]
    assert "${WORKER_START_PERIOD:-" in start_period
    assert duration_seconds(interpolate(start_period)) >= 120
    assert interpolate(start_period, {"WORKER_START_PERIOD": "20m"}) == "20m"
    # GET /readyz, over HTTPS when the TLS override sets BRIDGE_TLS_CERT (bridge/probe.py).
    assert bridge["healthcheck"]["test"] == ["CMD", "python", "-m", "bridge.probe"]
    # Stopping lets in-flight work finish: the stop grace period exceeds each service's own grace.
    for name, service in (("worker", worker), ("bridge", bridge)):
        grace = float(service["environment"][f"{name.upper()}_GRACE_SECONDS"])
        assert duration_seconds(service["stop_grace_period"]) > grace


def test_monitoring_profile_runs_prometheus_and_grafana_on_the_shipped_files(compose):
    services = compose["services"]
    monitoring = {name for name, service in services.items() if "monitoring" in service.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    prometheus, grafana = services["prometheus"], services["grafana"]
    mounts = {}
    for name in monitoring:
        for volume in services[name]["volumes"]:
            source, target, *_ = volume.split(":")
            if source.startswith("./"):
                assert (ROOT / source).is_dir(), volume
                assert volume.endswith(":ro"), f"{name} mounts configuration read-only: {volume}"
                mounts[target] = ROOT / source
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_path = Path(config_flag.split("=", 1)[1])
    assert (mounts[str(config_path.parent)] / config_path.name).is_file()
    for rule_file in yaml.safe_load((mounts[str(config_path.parent)] / config_path.name).read_text())["rule_files"]:
        assert (mounts[str(config_path.parent)] / rule_file).is_file()
    # Grafana: the provisioned data source is the compose Prometheus; the dashboards folder is mounted.
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards/arterys.yml").read_text())["providers"]
    assert list(mounts[provider["options"]["path"]].glob("*.json"))
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[str(Path(home).parent)] / Path(home).name).is_file()
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    # No authentication in front of either: published on loopback only.
    for name in monitoring:
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    # Pinned images, not :latest, fully qualified (podman does not guess a registry for a short name).
    for name in monitoring:
        assert re.fullmatch(r"docker\.io/[\w./-]+:v?\d+\.\d+\.\d+", services[name]["image"]), services[name]["image"]


def test_gpu_override_reserves_a_gpu_per_worker(compose):
    override = yaml.safe_load((ROOT / "deploy/compose/gpu.yml").read_text())
    assert set(override["services"]) == {"worker"}
    (device,) = override["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] >= 1
    assert "ports" not in override["services"]["worker"]  # still scalable


@pytest.mark.parametrize("name", ["worker", "bridge"])
def test_dockerfile_matches_the_repository(name):
    path = DOCKERFILES[name]
    instructions = dockerfile_instructions(path)
    for source in copy_sources(path):
        assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
    installs = [a for i, a in instructions if i == "RUN" and "pip install" in a]
    (requirement_path,) = re.findall(r"-r (\S+)", installs[0])
    requirement_file = Path(requirement_path).name
    assert requirement_file == f"requirements-{name}.txt" and requirement_file in copy_sources(path)
    for line in (ROOT / requirement_file).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", line.strip()), f"unpinned: {line}"
    (cmd,) = [a for i, a in instructions if i == "CMD"]
    assert cmd == f'["python", "-m", "{name}"]'
    read = environment_variables(name)
    for variable in dockerfile_env(path):
        if variable.startswith(name.upper() + "_"):
            assert variable in read, f"{variable} is set in {path.name} but never read"
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    # Runs as a numeric non-root user (Kubernetes' runAsNonRoot cannot check a user name).
    (user,) = [a for i, a in instructions if i == "USER"]
    assert user == "10001:10001"


@pytest.mark.parametrize("name", ["worker", "bridge"])
def test_dockerfile_keeps_the_build_ca_out_of_the_image(name):
    """Dependencies are installed in a stage of their own, the only one that sees docker/build-ca/; the image
    copies the virtualenv out of it. The base image is an ARG with a fully qualified default (podman asks
    which registry a short name means; a registry mirror or docker/python-base-image.sh replaces it)."""
    instructions = dockerfile_instructions(DOCKERFILES[name])
    assert instructions[0] == ("ARG", f"PYTHON_IMAGE={PYTHON_IMAGE}")
    froms = [argument for instruction, argument in instructions if instruction == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS dependencies", "${PYTHON_IMAGE}"]
    final = instructions[[i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM"][-1]:]
    stage = instructions[: len(instructions) - len(final)]
    assert ("COPY", "docker/build-ca/ /build-ca/") in stage
    assert not any("build-ca" in argument for _, argument in final)
    assert ("COPY", "--from=dependencies /opt/venv /opt/venv") in final
    (path_env,) = [argument for instruction, argument in final if instruction == "ENV" and "PATH=" in argument]
    assert "PATH=/opt/venv/bin:$PATH" in path_env
    assert "PIP_CERT" not in " ".join(argument for instruction, argument in final if instruction == "ENV")


@pytest.mark.parametrize("name", ["worker", "bridge"])
def test_image_holds_every_package_its_code_imports(name):
    """Every first-party package the image's entry points import is COPY'd and passes .dockerignore."""
    script = textwrap.dedent("""
        import importlib, pathlib, sys
        root = pathlib.Path.cwd().resolve()
        for module in sys.argv[1].split(","):
            importlib.import_module(module)
        packages = set()
        for module in list(sys.modules.values()):
            path = pathlib.Path(getattr(module, "__file__", None) or "/").resolve()
            if path.is_relative_to(root) and not path.is_relative_to(root / ".venv"):
                packages.add(module.__name__.split(".")[0])
        print(" ".join(sorted(packages)))
    """)
    result = subprocess.run([sys.executable, "-c", script, IMAGE_MODULES[name]], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    packages = result.stdout.split()
    assert name in packages
    copied = {source.rstrip("/") for source in copy_sources(DOCKERFILES[name])}
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    for package in packages:
        assert package in copied, f"{DOCKERFILES[name].name} does not COPY {package}/, which {name} imports"
        assert not ignore.excluded(f"{package}/__init__.py"), f".dockerignore leaves {package}/ out of the context"


def test_compose_environment_is_read_by_the_services(compose):
    for name in CORE_SERVICES:
        read = environment_variables(name)
        for variable in compose["services"][name]["environment"]:
            assert variable in read, f"{variable} in docker-compose.yml is never read by {name}"


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed in this image")
    sys.meta_path.insert(0, Block())
    import importlib
    for module in sys.argv[2].split(","):
        importlib.import_module(module)
""")


@pytest.mark.parametrize(("modules", "absent"), [
    # The bridge image has no numpy, pydicom, Pillow: importing them would fail there. It has requests, for
    # the OTLP/HTTP span exporter only, which the bridge imports only when tracing is on.
    (IMAGE_MODULES["bridge"], "numpy,pydicom,PIL,requests,requests_toolbelt,mock_model,worker"),
    # Pillow is in the worker image (requirements-worker.txt): highdicom, which the worker imports, needs it.
    (IMAGE_MODULES["worker"], "flask,cheroot,werkzeug,requests,requests_toolbelt,bridge,testtool"),
])
def test_each_image_imports_only_what_it_installs(modules, absent):
    result = subprocess.run([sys.executable, "-c", BLOCKER, absent, modules], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def healthcheck_command(service: dict, port_from: str, port_to: int) -> list[str]:
    """A compose CMD health check as a local command: our Python, the container port moved."""
    kind, program, *args = service["healthcheck"]["test"]
    assert kind == "CMD" and program == "python"
    return [sys.executable, *(arg.replace(f":{port_from}/", f":{port_to}/") for arg in args)]


def test_services_start_with_the_container_environment(compose, tmp_path):
    """The compose environment, hosts moved to loopback: worker health, the compose health checks,
    the bridge READY, worker metrics on their own port."""
    worker_port, metrics_port, bridge_port = free_port(), free_port(), free_port()
    worker_env = {k: str(interpolate(v)) for k, v in {**dockerfile_env(DOCKERFILES["worker"]),
                                                      **compose["services"]["worker"]["environment"]}.items()}
    worker_env.update(WORKER_LISTEN=f"127.0.0.1:{worker_port}", WORKER_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
                      WORKER_SPOOL_DIR=str(tmp_path))
    bridge_env = {k: str(interpolate(v)) for k, v in {**dockerfile_env(DOCKERFILES["bridge"]),
                                                      **compose["services"]["bridge"]["environment"]}.items()}
    bridge_env.update(BRIDGE_LISTEN=f"127.0.0.1:{bridge_port}",
                      BRIDGE_WORKER=bridge_env["BRIDGE_WORKER"].replace("worker:", "localhost:").replace(
                          ":50051", f":{worker_port}"))
    worker_check = healthcheck_command(compose["services"]["worker"], "50051", worker_port)
    bridge_check = healthcheck_command(compose["services"]["bridge"], "8900", bridge_port)
    worker = spawn(tmp_path, "worker", ["-m", "worker"], worker_port, worker_env)
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge"], bridge_port, bridge_env)
    try:
        wait_for_health(worker)
        probe = subprocess.run(worker_check, cwd=ROOT, capture_output=True, text=True,
                               env={**worker_env, "PATH": ""})
        assert probe.returncode == 0, probe.stderr
        wait_for_http(bridge, "/healthcheck", "READY")
        assert requests.get(f"http://127.0.0.1:{bridge_port}/readyz").status_code == 200
        # The health check runs with the container's environment: BRIDGE_LISTEN names the port.
        check = subprocess.run(bridge_check, cwd=ROOT, capture_output=True, text=True, env=bridge_env)
        assert check.returncode == 0, check.stderr
        assert "worker_model_loaded 1.0" in requests.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert "bridge_worker_ready" in requests.get(f"http://127.0.0.1:{bridge_port}/metrics").text
        # With its worker gone, the bridge's health check fails (not ready), though the bridge runs.
        worker.stop()
        deadline = time.monotonic() + 15
        while subprocess.run(bridge_check, cwd=ROOT, capture_output=True, timeout=30, env=bridge_env).returncode == 0:
            assert time.monotonic() < deadline, "the bridge's health check still passes without a worker"
            time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{bridge_port}/healthz").status_code == 200
    finally:
        bridge.stop()
        worker.stop()
    probe = subprocess.run(worker_check, cwd=ROOT, capture_output=True, text=True, env={**worker_env, "PATH": ""})
    assert probe.returncode == 1

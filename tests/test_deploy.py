"""docker-compose.yml and the Dockerfiles: consistent with the code, and their processes run as configured.

No Docker engine runs on these machines, so the same commands and environment the containers use are
started directly, on loopback.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
import yaml

from tests.services import ROOT, free_port, spawn, wait_for_health, wait_for_http

DOCKERFILES = {"worker": ROOT / "docker/worker.Dockerfile", "bridge": ROOT / "docker/bridge.Dockerfile"}
CONFIG_MODULES = {"worker": ROOT / "worker/config.py", "bridge": ROOT / "bridge/config.py"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for instruction, argument in dockerfile_instructions(path):
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", argument)))
    return env


def test_compose_services_are_scalable_and_wired(compose):
    services = compose["services"]
    assert set(services) == {"worker", "bridge"}
    worker, bridge = services["worker"], services["bridge"]
    # Scaling needs no fixed name and no host port on the worker.
    assert "container_name" not in worker and "ports" not in worker
    listen_port = worker["environment"]["WORKER_LISTEN"].rsplit(":", 1)[1]
    assert listen_port in worker["expose"]
    # The bridge resolves the service name to every replica (dns:///), round_robin does the rest.
    assert bridge["environment"]["BRIDGE_WORKER"] == f"dns:///worker:{listen_port}"
    assert bridge["ports"] == ["8900:8900"]
    for name, service in services.items():
        assert Path(ROOT / service["build"]["context"], service["build"]["dockerfile"]) == DOCKERFILES[name]
        assert service["stop_grace_period"]


@pytest.mark.parametrize("name", ["worker", "bridge"])
def test_dockerfile_matches_the_repository(name):
    path = DOCKERFILES[name]
    instructions = dockerfile_instructions(path)
    for instruction, argument in instructions:
        if instruction == "COPY":
            *sources, _ = argument.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
    installs = [a for i, a in instructions if i == "RUN" and "pip install" in a]
    (requirement_file,) = re.findall(r"-r (\S+)", installs[0])
    assert requirement_file == f"requirements-{name}.txt"
    for line in (ROOT / requirement_file).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", line.strip()), f"unpinned: {line}"
    (cmd,) = [a for i, a in instructions if i == "CMD"]
    assert cmd == f'["python", "-m", "{name}"]'
    config_source = CONFIG_MODULES[name].read_text()
    for variable in dockerfile_env(path):
        if variable.startswith(name.upper() + "_"):
            assert f'"{variable}"' in config_source, f"{variable} is set in {path.name} but never read"
    assert ("STOPSIGNAL", "SIGTERM") in instructions


def test_compose_environment_is_read_by_the_services(compose):
    for name, service in compose["services"].items():
        source = CONFIG_MODULES[name].read_text()
        for variable in service["environment"]:
            assert f'"{variable}"' in source, f"{variable} in docker-compose.yml is never read by {name}"


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
    # The bridge image has no numpy, pydicom, Pillow, requests: importing them would fail there.
    ("bridge.__main__,bridge.server,bridge.app", "numpy,pydicom,PIL,requests,requests_toolbelt,mock_model,worker"),
    ("worker.__main__,worker.server,worker.probe,mock_model,mock_model.faults",
     "flask,cheroot,werkzeug,PIL,requests,requests_toolbelt,bridge,testtool"),
])
def test_each_image_imports_only_what_it_installs(modules, absent):
    result = subprocess.run([sys.executable, "-c", BLOCKER, absent, modules], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_services_start_with_the_container_environment(compose, tmp_path):
    """The compose environment, hosts moved to loopback: worker health, the probe, bridge READY."""
    worker_port, metrics_port, bridge_port = free_port(), free_port(), free_port()
    worker_env = {k: str(v) for k, v in {**dockerfile_env(DOCKERFILES["worker"]),
                                         **compose["services"]["worker"]["environment"]}.items()}
    worker_env.update(WORKER_LISTEN=f"127.0.0.1:{worker_port}", WORKER_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
                      WORKER_SPOOL_DIR=str(tmp_path))
    bridge_env = {k: str(v) for k, v in {**dockerfile_env(DOCKERFILES["bridge"]),
                                         **compose["services"]["bridge"]["environment"]}.items()}
    bridge_env.update(BRIDGE_LISTEN=f"127.0.0.1:{bridge_port}",
                      BRIDGE_WORKER=bridge_env["BRIDGE_WORKER"].replace("worker:", "localhost:").replace(
                          ":50051", f":{worker_port}"))
    worker = spawn(tmp_path, "worker", ["-m", "worker"], worker_port, worker_env)
    bridge = spawn(tmp_path, "bridge", ["-m", "bridge"], bridge_port, bridge_env)
    try:
        wait_for_health(worker)
        probe = subprocess.run([sys.executable, "-m", "worker.probe"], cwd=ROOT, capture_output=True, text=True,
                               env={**worker_env, "PATH": ""})
        assert probe.returncode == 0, probe.stderr
        wait_for_http(bridge, "/healthcheck", "READY")
        assert requests.get(f"http://127.0.0.1:{bridge_port}/readyz").status_code == 200
        assert "worker_model_loaded 1.0" in requests.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        bridge.stop()
        worker.stop()
    probe = subprocess.run([sys.executable, "-m", "worker.probe"], cwd=ROOT, capture_output=True, text=True,
                           env={**worker_env, "PATH": ""})
    assert probe.returncode == 1

"""Starts the real services as processes (`python -m worker`, `python -m bridge`) on free loopback ports.

Tests talk to them exactly as users do: gRPC to the worker, HTTP to the bridge.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def spawn_process(args: list[str], env: dict | None, log_path: Path, base_env: dict | None = None,
                  cwd: Path = ROOT) -> subprocess.Popen:
    """`python ARGS` in `cwd` (the repository), output to log_path; environment: base_env (default: ours) + env."""
    full_env = {**(os.environ if base_env is None else base_env), "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, *args], cwd=cwd, env=full_env, stdout=handle,
                                stderr=subprocess.STDOUT)


_started = itertools.count(1)


def spawn(tmp: Path, name: str, args: list[str], port: int, env: dict | None = None, cwd: Path = ROOT) -> Service:
    """Starts `python ARGS` with its output in TMP/NAME-N.log (N counts the processes started); does not wait."""
    log_path = tmp / f"{name}-{next(_started)}.log"
    return Service(spawn_process(args, env, log_path, cwd=cwd), port, log_path)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.02,
             service: Service | None = None):
    """Polls `predicate` until it returns something true (returned), or fails after `timeout` seconds; with a
    `service`, fails at once (with its log) when its process exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if service is not None and service.process.poll() is not None:
            raise AssertionError(f"the process exited with {service.process.returncode} while waiting for "
                                 f"{what}:\n{service.log()}")
        if time.monotonic() >= deadline:
            tail = f":\n{service.log()}" if service is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(interval)


LISTENING = re.compile(r"listening on \S+ \(port (\d+)")


def reported_port(service: Service, timeout: float = 60) -> int:
    """The port a service bound to port 0 reports in its log ("... listening on HOST:0 (port N)")."""
    match = wait_for(lambda: LISTENING.search(service.log()), timeout, "the service to report its port",
                     interval=0.05, service=service)
    return int(match[1])


def start_worker(tmp: Path, model: str = "mock_model", *extra: str, env: dict | None = None,
                 wait_serving: bool = True, timeout: float = 60, port: int | None = None,
                 cwd: Path = ROOT) -> Service:
    """`python -m worker` on `port`, or on port 0 with the port it reports (no race for a free port); in `cwd`."""
    service = spawn(tmp, "worker", ["-m", "worker", "--model", model, "--listen", f"127.0.0.1:{port or 0}", *extra],
                    port or 0, env, cwd)
    if not port:
        service.port = reported_port(service, timeout)
    if wait_serving:
        wait_for_health(service, timeout)
    return service


def health_status(port: int, timeout: float = 1.0) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.RpcError as error:
            return error.code().name


def wait_for_health(service: Service, timeout: float = 60, want: str = "SERVING") -> None:
    wait_for(lambda: health_status(service.port) == want, timeout, f"health {want}", interval=0.1, service=service)


def start_bridge(tmp: Path, worker_target: str, *extra: str, env: dict | None = None,
                 wait_ready: bool = True, timeout: float = 60) -> Service:
    """`python -m bridge` on port 0, with the port it reports."""
    service = spawn(tmp, "bridge", ["-m", "bridge", "--worker", worker_target, "--listen", "127.0.0.1:0", *extra],
                    0, env)
    service.port = reported_port(service, timeout)
    wait_for_http(service, "/healthcheck" if wait_ready else "/ping", "READY" if wait_ready else None, timeout)
    return service


def wait_for_http(service: Service, path: str, body: str | None, timeout: float = 60) -> None:
    def answered() -> bool:
        try:
            response = requests.get(f"http://{service.address}{path}", timeout=2)
        except requests.ConnectionError:
            return False
        return response.status_code == 200 and (body is None or response.text == body)

    wait_for(answered, timeout, f"{path} to answer {body or '200'}", interval=0.1, service=service)


@contextmanager
def mock_stack(tmp: Path, study_root: Path) -> Iterator[dict]:
    """What most end-to-end tests talk to: the mock model's worker (reading studyPath under study_root),
    a RequestProbe worker on the route /probe, and one bridge in front of both."""
    worker = start_worker(tmp, "mock_model", "--study-root", str(study_root))
    probe = start_worker(tmp, "tests.models:RequestProbe")
    bridge = start_bridge(tmp, worker.address, "--route", f"/probe={probe.address}")
    try:
        yield {"worker": worker, "probe": probe, "bridge": bridge, "port": bridge.port,
               "url": f"http://{bridge.address}"}
    finally:
        for service in (bridge, worker, probe):
            service.stop()


def environment_variables(service: str) -> set[str]:
    """The environment variables `python -m SERVICE` reads: each flag's help names its own in brackets."""
    module = importlib.import_module({"bridge": "bridge.config", "worker": "worker.serving.config"}[service])
    return set(re.findall(r"\[([A-Z][A-Z0-9_]+)", module.build_parser().format_help()))

"""Shared fixtures: a real DICOM study, an in-process mock worker, and worker subprocesses for CLI tests.

Everything here is real: gRPC servers bound to 127.0.0.1 port 0 (or a free port for subprocesses),
plain gRPC clients, DICOM files written with pydicom.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings

from contract import inference_pb2_grpc as pb_grpc
from service_runtime.logs import configure_logging
from tests import system_tools
from tests.dicom_factory import StudyRecord, write_standard_study
from tests.services import Service, free_port, spawn_process, wait_for
from tests.worker_client import CHANNEL_OPTIONS, dicom_parts

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def pytest_configure(config) -> None:
    configure_logging()  # once, as every entry point does, before anything logs


def pytest_terminal_summary(terminalreporter) -> None:
    """The tests that failed for want of a system program, in one list with the command that installs them."""
    lines = system_tools.summary_lines(terminalreporter.stats.get("failed", []))
    if lines:
        terminalreporter.section("system tools missing", red=True)
        for line in lines:
            terminalreporter.line(line, red=True)


# ------------------------------------------------------------------------------------------- studies


@pytest.fixture(scope="session")
def standard_study(tmp_path_factory) -> StudyRecord:
    """4 series (axial CT, sagittal MR, a 5-frame instance, RLE CT), files shuffled within each series."""
    return write_standard_study(tmp_path_factory.mktemp("standard") / "study")


def send_order(study: StudyRecord, seed: int = 3) -> list:
    """The study's instances shuffled across series too: the worker must group and order them itself."""
    instances = list(study.instances)
    random.Random(seed).shuffle(instances)
    return instances


@pytest.fixture(scope="session")
def standard_sent(standard_study) -> list:
    """InstanceRecords of the standard study in the order tests send them."""
    return send_order(standard_study)


@pytest.fixture(scope="session")
def standard_parts(standard_sent) -> list:
    return dicom_parts([i.path for i in standard_sent])


# --------------------------------------------------------------------------------- in-process worker


def start_worker(model_object, load: bool = True, **config):
    """create_server + start (+ load_model) for an in-process model; the caller stops it."""
    from worker.serving.config import WorkerConfig
    from worker.serving.server import create_server

    config.setdefault("listen", "127.0.0.1:0")
    config.setdefault("model", type(model_object).__name__)
    server = create_server(model_object, WorkerConfig(**config))
    server.start()
    if load:
        server.load_model()
    return server


@contextmanager
def serving(model_object, load: bool = True, **config):
    """An in-process worker with a channel and stub to it: `with serving(model) as (server, channel, stub)`."""
    server = start_worker(model_object, load=load, **config)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS)
    try:
        yield server, channel, pb_grpc.InferenceStub(channel)
    finally:
        channel.close()
        server.stop(0)


@pytest.fixture(scope="session")
def mock_worker():
    from mock_model import MockModel

    server = start_worker(MockModel(), model="mock_model")
    yield server
    server.stop(0)


@pytest.fixture(scope="session")
def worker_channel(mock_worker):
    channel = grpc.insecure_channel(f"127.0.0.1:{mock_worker.port}", options=CHANNEL_OPTIONS)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def worker_stub(worker_channel) -> pb_grpc.InferenceStub:
    return pb_grpc.InferenceStub(worker_channel)


# ------------------------------------------------------------------------------------ worker processes


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 2.0):
    """The health status, or None while nothing answers."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.RpcError:
        return None
    return response.status


@dataclass
class WorkerProcess(Service):
    """A `python -m worker` process with gRPC helpers; killed (not stopped gracefully) at teardown."""

    metrics_port: int | None = None
    channels: list = field(default_factory=list)

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self.channels.append(channel)
        return channel

    def stub(self) -> pb_grpc.InferenceStub:
        return pb_grpc.InferenceStub(self.channel())

    def wait_serving(self, timeout: float = 60.0) -> None:
        channel = self.channel()
        wait_for(lambda: health_status(channel, timeout=1.0) == SERVING, timeout, "SERVING", interval=0.05,
                 service=self)

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"worker still running after {timeout} s:\n{self.log()}") from error

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def worker_process(tmp_path):
    """Factory: `worker_process(*args, env={...}, listen=True, metrics=False, wait=True)` starts
    `python -m worker ARGS` (plus `--listen 127.0.0.1:<free port>` unless listen=False, and
    `--metrics-listen` on another free port when metrics=True), waits until gRPC health says SERVING
    (unless wait=False), and kills it at teardown. WORKER_* variables of the test run are not inherited.
    """
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict | None = None, listen: bool = True, metrics: bool = False,
              wait: bool = True, port: int | None = None, metrics_port: int | None = None) -> WorkerProcess:
        argv = ["-m", "worker", *args]
        port = port or free_port()
        if listen:
            argv += ["--listen", f"127.0.0.1:{port}"]
        if metrics:
            metrics_port = metrics_port or free_port()
            argv += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(spawn_process(argv, env, log_path, base_env=environment), port, log_path,
                               metrics_port)
        started.append(worker)
        if wait:
            worker.wait_serving()
        return worker

    yield start
    for worker in started:
        worker.close()


# ------------------------------------------------------------------------------- hypothesis profiles

# The fuzz tests (tests/test_fuzz_*.py) run with the "ci" profile unless HYPOTHESIS_PROFILE names
# another. "ci" is derandomized (the same examples every run, so CI never flakes on a new find) and sized
# to keep each fuzz file at a few seconds; "long" (`make fuzz`) draws 20x as many fresh random examples and
# prints a reproduction blob for any failure. Tests scale their own counts from max_examples (100 = 1x).
# Neither keeps an example database; hypothesis still caches source constants in .hypothesis/ (ignored by git).
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, database=None)
settings.register_profile("long", max_examples=2000, deadline=None, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

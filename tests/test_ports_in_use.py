"""A port in use is an error: a second worker or bridge on a taken address says so in one line and exits 2.

The addresses are taken by what takes them in real life: a running worker (gRPC and metrics) and a
running bridge. gRPC binds with SO_REUSEPORT unless told not to, so without the worker's own setting a
second worker would start and quietly share the first one's calls.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.services import ROOT, free_port, start_bridge, start_worker


@pytest.fixture(scope="module")
def taken(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("taken")
    metrics_port = free_port()
    worker = start_worker(tmp, "mock_model", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    bridge = start_bridge(tmp, worker.address, wait_ready=False)
    yield {"worker": worker.address, "metrics": f"127.0.0.1:{metrics_port}", "bridge": bridge.address}
    bridge.stop()
    worker.stop()


def run(*args: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BRIDGE_"))}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment)


def test_a_second_worker_or_bridge_on_a_taken_port_exits_with_one_line(taken):
    free = f"127.0.0.1:{free_port()}"
    processes = {
        f"worker: cannot listen on {taken['worker']}: Address already in use":
            run("-m", "worker", "--model", "mock_model", "--listen", taken["worker"]),
        f"worker: cannot serve metrics on {taken['metrics']}: Address already in use":
            run("-m", "worker", "--model", "mock_model", "--listen", free, "--metrics-listen", taken["metrics"]),
        f"bridge: cannot listen on {taken['bridge']}: ":
            run("-m", "bridge", "--worker", taken["worker"], "--listen", taken["bridge"]),
    }
    for expected, process in processes.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 2, stderr
        assert len(stderr.splitlines()) == 1 and stderr.startswith(expected), stderr
        assert "address already in use" in stderr.lower()
        assert stdout == ""

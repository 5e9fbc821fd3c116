"""`--reload`: edit the model's source, get the new behaviour on the same port within seconds.

A real `python -m worker --reload` process hosting a model written into a temporary folder: an edit
restarts it (one log line), a request in flight during the edit still gets its answer from the old
model, a syntax error leaves the supervisor waiting for the next edit (also when the model is broken from
the start), and SIGTERM stops everything.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time

import grpc
import pytest

from tests.dicom_factory import SeriesSpec, write_study
from tests.services import free_port, spawn, wait_for, wait_for_health
from tests.worker_client import dicom_parts, infer, stub_for

MODEL = textwrap.dedent("""
    import time
    from worker import BoundingBox, Model, Result

    VERSION = {version!r}

    class Reloadable(Model):
        def infer(self, study):
            time.sleep(float(study.request.get("sleep", 0)))
            first = study.instances[0]
            return Result(bounding_boxes=[BoundingBox(VERSION, first.sop_instance_uid, [1, 1], [2, 2])])
""")
RESTARTED = "changed; restarting the worker"


def label(port: int, parts, request=None) -> str:
    return infer(stub_for(port), request or {}, parts, timeout=30).json["bounding_boxes_2d"][0]["label"]


def wait_for_label(port: int, parts, wanted: str, timeout: float = 20) -> float:
    """Seconds until the worker answers with `wanted` (calls fail while it restarts)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if label(port, parts) == wanted:
                return time.monotonic() - started
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no {wanted!r} answer after {timeout} s")


def write_model(path, text: str) -> None:
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == previous:  # a coarse clock: the watcher compares times and sizes
        time.sleep(0.01)
        path.write_text(text)


@pytest.mark.timeout(120)
def test_an_edit_restarts_the_worker_with_the_new_model(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    source = models / "reloadable.py"
    write_model(source, MODEL.format(version="one"))
    study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=8, cols=8, count=1)])
    parts = dicom_parts([study.instances[0].path])
    port = free_port()
    worker = spawn(tmp_path, "worker", ["-m", "worker", "--model", "reloadable:Reloadable", "--model-dir", str(models),
                                        "--reload", "--listen", f"127.0.0.1:{port}", "--grace-seconds", "20"], port,
                   env={"WORKER_RELOAD": ""})
    try:
        wait_for_health(worker)
        assert label(port, parts) == "one"

        # An edit while a call is in the model: the call is answered by the old model, then the new one serves.
        in_flight: dict = {}
        call = threading.Thread(target=lambda: in_flight.setdefault("label", label(port, parts, {"sleep": 2})))
        call.start()
        time.sleep(0.5)
        write_model(source, MODEL.format(version="two"))
        wait_for_label(port, parts, "two")
        call.join(30)
        assert in_flight["label"] == "one"
        assert worker.log().count(RESTARTED) == 1, worker.log()

        # A syntax error: the worker cannot start; the next edit brings it back.
        write_model(source, "def broken(:\n")
        deadline = time.monotonic() + 20
        while "waiting for a change to restart it" not in worker.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "importing reloadable failed: SyntaxError" in worker.log()
        write_model(source, MODEL.format(version="three"))
        wait_for_label(port, parts, "three")
        assert worker.log().count(RESTARTED) == 3
        assert "Traceback" not in worker.log()
    finally:
        assert worker.stop() == 0
    with pytest.raises(ConnectionError):  # the child is gone too
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.timeout(120)
def test_a_model_broken_from_the_start_is_waited_for(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    source = models / "reloadable.py"
    write_model(source, "def broken(:\n")
    study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=8, cols=8, count=1)])
    port = free_port()
    worker = spawn(tmp_path, "worker", ["-m", "worker", "--model", "reloadable:Reloadable", "--model-dir", str(models),
                                        "--reload", "--listen", f"127.0.0.1:{port}"], port, env={"WORKER_RELOAD": ""})
    try:
        wait_for(lambda: "could not start (its error is above); waiting for a change to" in worker.log(), 30,
                 "the supervisor to wait for a fix", service=worker)
        assert "importing reloadable failed: SyntaxError" in worker.log()
        write_model(source, MODEL.format(version="fixed"))
        wait_for_label(port, dicom_parts([study.instances[0].path]), "fixed")
    finally:
        assert worker.stop() == 0


def test_a_model_that_cannot_be_found_still_ends_reload_with_status_2(tmp_path):
    worker = spawn(tmp_path, "worker", ["-m", "worker", "--model", "no_such_model_here:Model", "--reload",
                                        "--listen", f"127.0.0.1:{free_port()}"], 0, env={"WORKER_RELOAD": ""})
    assert worker.process.wait(60) == 2
    assert "no module named 'no_such_model_here'" in worker.log()

"""The worker's life: readiness, reflection, limits, deadlines, cancellation, failures, shutdown, CLI, metrics.

In-process servers where the test must look inside (metrics registry, the fault models' counters);
real `python -m worker` processes for what only a process has (flags, environment, signals, exit codes).
"""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from contract import inference_pb2 as pb
from mock_model import MockModel
from mock_model.faults import FailingModel, SlowLoadingModel, SlowModel
from tests.conftest import NOT_SERVING, SERVING, health_status, serving
from tests.services import free_port, wait_for
from tests.worker_client import collect, infer, request_messages
from worker import Model, Result
from worker.serving.admission import Admission
from worker.serving.config import WorkerConfig
from worker.serving.errors import OUTCOMES
from worker.serving.metrics import WorkerMetrics
from worker.serving.servicer import MAX_OPEN_COMMAND_LABELS, InferenceServicer

SERVICE = "arterys.inference.v1.Inference"


class BrokenLoadModel(MockModel):
    """Started as `--model tests.test_worker_lifecycle:BrokenLoadModel`: its weights are missing."""

    name = "broken_load_model"

    def load(self) -> None:
        raise RuntimeError("weights missing: /models/weights.pt")


class Calls:
    """Infer calls running in the background; any still open are cancelled at teardown."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.open: list = []

    def start(self, stub, parts, command: str = "get-bounding-box-2d", timeout: float = 60):
        call = stub.Infer(request_messages({"inference_command": command}, parts), timeout=timeout)
        self.open.append(call)
        return call, self.pool.submit(collect, call)


@pytest.fixture
def calls():
    with ThreadPoolExecutor(max_workers=4) as pool:
        background = Calls(pool)
        yield background
        for call in background.open:
            call.cancel()


@pytest.fixture
def local_worker():
    """Factory for in-process workers (with their stub), stopped at teardown."""
    with ExitStack() as stack:
        yield lambda model, load=True, **config: stack.enter_context(serving(model, load=load, **config))


def sample(server, name: str, **labels) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


def outcomes(server, outcome: str) -> float:
    """worker_inferences_total for one outcome, whatever the command label."""
    return sum(
        s.value for family in server.metrics.registry.collect() for s in family.samples
        if s.name == "worker_inferences_total" and s.labels["outcome"] == outcome
    )


def call_error(future) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        future.result(timeout=30)
    return caught.value


# ------------------------------------------------------------------------------------- readiness


def test_not_serving_until_the_model_has_loaded(local_worker, standard_parts, monkeypatch):
    monkeypatch.setenv("MOCK_LOAD_SECONDS", "1.5")
    server, channel, stub = local_worker(SlowLoadingModel(), load=False)

    for service in ("", SERVICE):
        assert health_status(channel, service) == NOT_SERVING
    with pytest.raises(grpc.RpcError) as caught:
        infer(stub, {}, standard_parts[:1], timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "loading" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Describe(pb.DescribeRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sample(server, "worker_model_loaded") == 0
    # Refused before its header was read: counted apart from requests naming an unknown command.
    assert sample(server, "worker_inferences_total", model="slow_loading_model", command="unread",
                  outcome="unavailable") == 1

    loader = threading.Thread(target=server.load_model)
    loader.start()
    status = health_status(channel)
    if loader.is_alive():  # load() had not returned when health answered
        assert status == NOT_SERVING
    wait_for(lambda: health_status(channel) == SERVING, what="SERVING")
    loader.join(10)
    assert not loader.is_alive()
    assert health_status(channel, SERVICE) == SERVING
    assert sample(server, "worker_model_loaded") == 1
    assert infer(stub, {}, standard_parts[:1]).json["bounding_boxes_2d"]
    assert stub.Describe(pb.DescribeRequest(), timeout=10).name == "slow_loading_model"


def test_reflection_lists_the_services(worker_channel):
    database = ProtoReflectionDescriptorDatabase(worker_channel)
    services = set(database.get_services())
    assert {SERVICE, "grpc.health.v1.Health"} <= services
    service = descriptor_pool.DescriptorPool(database).FindServiceByName(SERVICE)
    assert {m.name for m in service.methods} == {"Infer", "InferWhole", "Describe"}


# ----------------------------------------------------------------------------- limits and deadlines


def test_a_call_beyond_slots_and_queue_fails_fast(local_worker, calls, standard_parts, monkeypatch):
    monkeypatch.setenv("MOCK_INFER_SECONDS", "120")
    model = SlowModel()
    server, channel, stub = local_worker(model, concurrency=1, queue_size=0)

    first, first_result = calls.start(stub, standard_parts[:2])
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 1, what="first call running")
    with pytest.raises(grpc.RpcError) as caught:
        infer(stub, {"inference_command": "get-bounding-box-2d"}, standard_parts[:2], timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "busy" in caught.value.details()
    # Refused while the first call is still running, not after it.
    assert not first_result.done() and model.completed == 0
    assert outcomes(server, "rejected") == 1

    first.cancel()
    assert call_error(first_result).code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: model.stopped_early == 1, what="the model to notice the cancellation")
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 0, what="the slot to be free")
    monkeypatch.setenv("MOCK_INFER_SECONDS", "0")
    assert infer(stub, {"inference_command": "get-bounding-box-2d"}, standard_parts[:2]).json["bounding_boxes_2d"]
    assert model.completed == 1


def test_deadline_exceeded_stops_the_model_and_the_worker_keeps_serving(local_worker, standard_parts,
                                                                         monkeypatch):
    monkeypatch.setenv("MOCK_INFER_SECONDS", "120")
    model = SlowModel()
    server, channel, stub = local_worker(model)

    with pytest.raises(grpc.RpcError) as caught:
        infer(stub, {}, standard_parts[:2], timeout=1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: model.stopped_early == 1, what="the model to notice the deadline")
    assert model.completed == 0
    wait_for(lambda: sample(server, "worker_inferences_total", model="slow_model", command="get-bounding-box-2d",
                            outcome="deadline_exceeded") == 1, what="the deadline_exceeded outcome")
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 0, what="the slot to be free")

    monkeypatch.setenv("MOCK_INFER_SECONDS", "0")
    assert health_status(channel) == SERVING
    assert infer(stub, {}, standard_parts[:2]).json["bounding_boxes_2d"]
    assert model.completed == 1


def test_a_call_cancelled_while_queued_leaves_the_queue(local_worker, calls, standard_parts, monkeypatch):
    monkeypatch.setenv("MOCK_INFER_SECONDS", "120")
    model = SlowModel()
    server, channel, stub = local_worker(model, concurrency=1, queue_size=1)

    running, running_result = calls.start(stub, standard_parts[:2])
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 1, what="first call running")
    queued, queued_result = calls.start(stub, standard_parts[:2])
    wait_for(lambda: sample(server, "worker_inference_duration_seconds_count", model="slow_model",
                            stage="receive") == 2, what="second call received and queued")
    assert sample(server, "worker_queue_depth") == 1

    queued.cancel()
    assert call_error(queued_result).code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: sample(server, "worker_queue_depth") == 0, what="the cancelled call to leave the queue")
    wait_for(lambda: sample(server, "worker_inferences_total", model="slow_model", command="get-bounding-box-2d",
                            outcome="cancelled") == 1, what="the cancelled outcome")

    # Its place is free again: a new call is queued, not refused, and runs once the first one ends.
    monkeypatch.setenv("MOCK_INFER_SECONDS", "0")
    _, third_result = calls.start(stub, standard_parts[:2])
    wait_for(lambda: sample(server, "worker_queue_depth") == 1, what="the third call to be queued")
    assert not third_result.done()
    running.cancel()
    assert call_error(running_result).code() == grpc.StatusCode.CANCELLED
    assert third_result.result(timeout=30).json["bounding_boxes_2d"]
    assert (model.stopped_early, model.completed) == (1, 1)  # the cancelled queued call never ran
    assert outcomes(server, "rejected") == 0


def test_a_model_that_raises_gives_unknown_and_the_worker_keeps_serving(local_worker, standard_parts):
    server, channel, stub = local_worker(FailingModel())
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            infer(stub, {}, standard_parts[:2])
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
        assert "RuntimeError: mock failure: the model crashed on purpose" in caught.value.details()
    assert health_status(channel) == SERVING
    assert stub.Describe(pb.DescribeRequest(), timeout=10).name == "failing_model"
    assert sample(server, "worker_inferences_total", model="failing_model", command="get-bounding-box-2d",
                  outcome="model_error") == 2
    assert sample(server, "worker_inflight_inferences") == 0


# --------------------------------------------------------------------------------- worker processes


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def metric(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_sigterm_lets_the_inflight_call_finish(worker_process, calls, standard_parts):
    worker = worker_process("--model", "mock_model.faults:SlowModel", env={"MOCK_INFER_SECONDS": "3"}, metrics=True)
    watch = health_pb2_grpc.HealthStub(worker.channel()).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert next(watch).status == SERVING

    _, result = calls.start(worker.stub(), standard_parts[:3])
    wait_for(lambda: metric(scrape(worker.metrics_port), "worker_inflight_inferences") == 1, what="call running")
    assert not result.done()
    worker.terminate()

    assert next(watch).status == NOT_SERVING  # health turns NOT_SERVING as shutdown begins
    watch.cancel()  # an open Watch would hold the server for the whole grace period

    def refused() -> bool:
        try:
            worker.stub().Describe(pb.DescribeRequest(), timeout=5)
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.UNAVAILABLE
        return False

    wait_for(refused, what="new calls to be refused")
    answer = result.result(timeout=30)
    assert len(answer.json["bounding_boxes_2d"]) >= 1
    assert worker.wait_exit(30) == 0
    assert "shutting down" in worker.log()


def test_flags_from_the_environment(worker_process):
    port, metrics_port = free_port(), free_port()
    worker = worker_process(listen=False, port=port, env={
        "WORKER_MODEL": "mock_model",
        "WORKER_LISTEN": f"127.0.0.1:{port}",
        "WORKER_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "WORKER_DEFAULT_COMMAND": "get-classification",
    })
    description = worker.stub().Describe(pb.DescribeRequest(), timeout=10)
    assert (description.name, description.default_command) == ("mock_model", "get-classification")
    assert metric(scrape(metrics_port), "worker_model_loaded") == 1


def test_metrics_endpoint(worker_process, standard_parts):
    worker = worker_process("--model", "mock_model", metrics=True)
    stub = worker.stub()
    answer = infer(stub, {"inference_command": "get-probability-mask"}, standard_parts)
    assert len(answer.binaries) == 4
    with pytest.raises(grpc.RpcError):
        infer(stub, {"inference_command": "get-nothing-7f3a"}, standard_parts[:1])

    samples = scrape(worker.metrics_port)
    assert metric(samples, "worker_inferences_total", model="mock_model", command="get-probability-mask",
                  outcome="ok") == 1
    # Unknown commands are folded into one label value: no unbounded cardinality.
    assert metric(samples, "worker_inferences_total", model="mock_model", command="unknown",
                  outcome="invalid_input") == 1
    assert not [key for key in samples if "get-nothing-7f3a" in str(key)]
    for stage in ("receive", "queue", "infer", "send"):
        assert metric(samples, "worker_inference_duration_seconds_count", model="mock_model", stage=stage) == 1
        assert metric(samples, "worker_inference_duration_seconds_sum", model="mock_model", stage=stage) >= 0
    assert metric(samples, "worker_inflight_inferences") == 0
    assert metric(samples, "worker_queue_depth") == 0
    # The refused call was refused before its study was received.
    assert metric(samples, "worker_received_bytes_total") == sum(len(p[2]) for p in standard_parts)
    assert metric(samples, "worker_sent_bytes_total") == sum(len(b) for b in answer.binaries)


def test_a_model_that_fails_to_load_exits_with_one_clear_line(worker_process):
    """load() raising is said like a model that cannot be imported: one line naming the error and the model's
    own line, exit status 2, the traceback only with LOG_LEVEL=DEBUG."""
    worker = worker_process("--model", "tests.test_worker_lifecycle:BrokenLoadModel", wait=False)
    assert worker.wait_exit(60) == 2
    log = worker.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert "the model failed to load: RuntimeError: weights missing: /models/weights.pt" in errors[0]
    assert "test_worker_lifecycle.py, line" in errors[0] and "LOG_LEVEL=DEBUG" in errors[0]
    assert "Traceback" not in log and "finishing in-flight" not in log


def test_an_unknown_model_exits_non_zero(worker_process):
    worker = worker_process("--model", "no_such_package_3b1c:Model", wait=False)
    assert worker.wait_exit(60) != 0
    assert "no_such_package_3b1c" in worker.log()


def test_command_labels_stay_bounded_for_a_model_that_takes_any_command():
    class AnyCommand(Model):
        name = "any"

        def infer(self, study):
            return Result()

    metrics = WorkerMetrics()
    servicer = InferenceServicer(AnyCommand(), Admission(1, 0, metrics), metrics, WorkerConfig(), None, None)
    labels = [servicer.metric_command(f"command-{n}") for n in range(MAX_OPEN_COMMAND_LABELS + 5)]
    assert labels[:MAX_OPEN_COMMAND_LABELS] == [f"command-{n}" for n in range(MAX_OPEN_COMMAND_LABELS)]
    assert labels[MAX_OPEN_COMMAND_LABELS:] == ["other"] * 5
    assert servicer.metric_command("command-3") == "command-3"  # seen before: keeps its label
    assert servicer.metric_command("") == "none" and servicer.metric_command(None) == "unread"


def quiet_log_problems(log: str) -> list[str]:
    """Lines a graceful stop must not write: errors, tracebacks, asyncio's complaints."""
    return [line for line in log.splitlines()
            if " ERROR " in line or "Traceback" in line or "Task was destroyed" in line
            or "Exception in callback" in line or "Event loop is closed" in line or "not handled" in line]


def test_a_graceful_stop_with_a_health_watch_open_logs_no_error(worker_process):
    """A bridge (or a kubelet) keeps a health Watch open: stopping must end it quietly."""
    worker = worker_process("--model", "mock_model", metrics=True)
    watch = health_pb2_grpc.HealthStub(worker.channel()).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    assert next(watch).status == SERVING
    worker.terminate()
    assert worker.wait_exit(45) == 0
    watch.cancel()
    assert not quiet_log_problems(worker.log()), worker.log()
    assert "worker stopped" in worker.log()


def test_a_graceful_stop_while_a_model_overruns_its_deadline_logs_no_error(worker_process, calls, standard_parts):
    """The call's deadline passes while the model still runs (it never checks is_cancelled); SIGTERM then: the
    worker waits out its grace, exits 0, and says what it could not finish in one line, without a traceback."""
    worker = worker_process("--model", "mock_model.faults:StubbornModel", "--grace-seconds", "2",
                            env={"MOCK_INFER_SECONDS": "6"}, metrics=True)
    watch = health_pb2_grpc.HealthStub(worker.channel()).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    assert next(watch).status == SERVING
    call, result = calls.start(worker.stub(), standard_parts[:2], timeout=1)
    with pytest.raises(grpc.RpcError) as error:
        result.result(timeout=30)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: metric(scrape(worker.metrics_port), "worker_inflight_inferences") == 1, what="model running")
    worker.terminate()
    assert worker.wait_exit(45) == 0
    watch.cancel()
    assert not quiet_log_problems(worker.log()), worker.log()


def test_every_command_and_outcome_is_counted_from_start_up(worker_process):
    """Series that first appear at 1 show no increase to rate(): the first failure of a kind would be missed,
    by the dashboards and by the failure-ratio rule alike. So every one exists at 0 from the start."""
    worker = worker_process("--model", "mock_model", metrics=True)
    samples = {(dict(labels)["command"], dict(labels)["outcome"]): value
               for (name, labels), value in scrape(worker.metrics_port).items() if name == "worker_inferences_total"}
    commands = {*MockModel.commands, "unread", "unknown"}
    assert {command for command, _ in samples} == commands
    assert {outcome for _, outcome in samples} == set(OUTCOMES)
    assert len(samples) == len(commands) * len(OUTCOMES) and set(samples.values()) == {0.0}

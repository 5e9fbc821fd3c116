"""Dynamic batching (worker/serving/batching.py) through real in-process gRPC workers.

Batches are made deterministic without timing: a long `max_batch_delay` makes a batch start only when it is
full, and models that wait on an event hold the model thread while the test arranges what waits behind it.
Each study of a batch must keep its own answer, error, deadline, cancellation, log tags and metrics.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import grpc
import pytest

from service_runtime.logs import RequestTagFilter
from tests.conftest import serving
from tests.dicom_factory import SeriesSpec, write_study
from tests.otlp_collector import Collector
from tests.services import start_worker, wait_for
from tests.worker_client import collect, dicom_parts, request_messages, stub_for
from worker import BoundingBox, InvalidInput, Model, Result, UnsupportedStudy
from worker.serving.config import WorkerConfig
from worker.serving.server import create_server

LONG = 60.0  # a delay no test waits for: such a batch starts only when full


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    study = write_study(tmp_path_factory.mktemp("batching") / "study", [SeriesSpec("ct", rows=8, cols=10, count=1)])
    return dicom_parts([i.path for i in study.instances])


class Recording(Model):
    """Answers each study with its request's "n"; records the batches it saw (lists of n)."""

    name = "recording"
    max_batch_size = 4
    max_batch_delay = LONG

    def __init__(self, **settings) -> None:
        for key, value in settings.items():
            setattr(self, key, value)
        self.batches: list[list] = []
        self.entered = threading.Event()  # a batch has started
        self.gate = threading.Event()  # set: batches run through
        self.gate.set()

    def infer_batch(self, studies):
        self.batches.append([s.request.get("n") for s in studies])
        self.entered.set()
        self.gate.wait(60)
        return [self.answer(s) for s in studies]

    def answer(self, study):
        return Result(study_ml_json={"n": study.request.get("n"), "input_hash": study.input_hash})


class Calls:
    """Infer calls in the background: `start(n)` returns (call, future of its Answer)."""

    def __init__(self, stub, parts, pool: ThreadPoolExecutor) -> None:
        self.stub, self.parts, self.pool, self.open = stub, parts, pool, []

    def start(self, n, timeout: float = 60, **request):
        call = self.stub.Infer(request_messages({"n": n, **request}, self.parts), timeout=timeout)
        self.open.append(call)
        return call, self.pool.submit(collect, call)


@pytest.fixture
def worker(parts):
    """worker(model, **config) -> (server, Calls); everything stopped at teardown."""
    with ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=16))
        started: list[Calls] = []

        def start(model, **config):
            server, _channel, stub = stack.enter_context(serving(model, **config))
            started.append(Calls(stub, parts, pool))
            return server, started[-1]

        yield start
        for calls in started:
            for call in calls.open:
                call.cancel()


def sample(server, name: str, **labels) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


def outcome(server, model: str, name: str) -> float:
    return sample(server, "worker_inferences_total", model=model, command="none", outcome=name) or 0.0


def failure(future) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        future.result(timeout=60)
    return caught.value


def trailer(error: grpc.RpcError, key: str) -> str:
    return dict(error.trailing_metadata() or ())[key]


# ------------------------------------------------------------------------------------------ batches


def test_studies_waiting_together_run_as_one_batch_each_with_its_own_answer(worker):
    model = Recording()
    server, calls = worker(model)
    futures = [calls.start(n)[1] for n in range(8)]
    answers = [future.result(timeout=60) for future in futures]

    # Full batches of max_batch_size: the next 4 gathered while the first batch ran.
    assert sorted(len(batch) for batch in model.batches) == [4, 4]
    assert sorted(n for batch in model.batches for n in batch) == list(range(8))
    for n, answer in enumerate(answers):  # each caller gets its own study's answer and input hash
        assert answer.json["study_ml_json"]["n"] == n
        assert answer.json["study_ml_json"]["input_hash"] == answer.result.input_hash
    assert len({answer.result.input_hash for answer in answers}) == 8

    assert sample(server, "worker_batch_size_count", model="recording") == 2
    assert sample(server, "worker_batch_size_sum", model="recording") == 8
    assert sample(server, "worker_batch_size_bucket", model="recording", le="4.0") == 2
    assert sample(server, "worker_batch_size_bucket", model="recording", le="2.0") == 0
    assert sample(server, "worker_batch_fill_seconds_count", model="recording") == 2
    assert sample(server, "worker_batch_model_seconds_count", model="recording") == 2
    assert outcome(server, "recording", "ok") == 8


def test_a_lone_study_runs_once_the_delay_is_over(worker):
    model = Recording(max_batch_delay=0.02)
    server, calls = worker(model)
    assert calls.start(7)[1].result(timeout=60).json["study_ml_json"]["n"] == 7
    assert model.batches == [[7]]
    assert sample(server, "worker_batch_fill_seconds_count", model="recording") == 1


def test_models_without_infer_batch_have_the_batch_series_at_zero(mock_worker):
    for name in ("worker_batch_size_count", "worker_batch_fill_seconds_count", "worker_batch_model_seconds_count"):
        assert sample(mock_worker, name, model="mock_model") == 0
    assert mock_worker.servicer.batcher is None


def test_a_batching_model_has_places_for_a_running_batch_and_the_next_one(worker):
    model = Recording(max_batch_size=2)
    model.gate.clear()
    server, calls = worker(model, concurrency=1, queue_size=0)
    held = [calls.start(n)[1] for n in range(2)]
    wait_for(lambda: model.entered.is_set(), what="the first batch to start")
    held += [calls.start(n)[1] for n in range(2, 4)]  # the next batch gathers while the first one runs
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 4, what="the next batch to gather")
    # (concurrency 1 + 1) x max_batch_size 2 places, no queue: a fifth study would only wait, so it is refused.
    error = failure(calls.start(4)[1])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in error.details()
    model.gate.set()
    assert [future.result(timeout=60).json["study_ml_json"]["n"] for future in held] == [0, 1, 2, 3]
    assert [sorted(batch) for batch in model.batches] == [[0, 1], [2, 3]]


@pytest.mark.parametrize("settings, message", [
    ({"max_batch_size": 0}, "max_batch_size must be an integer of at least 1, got 0"),
    ({"max_batch_size": 2.5}, "max_batch_size must be an integer of at least 1, got 2.5"),
    ({"max_batch_delay": -1}, "max_batch_delay must be a number of seconds from 0 to 60, got -1"),
    ({"max_batch_delay": "5ms"}, "max_batch_delay must be a number of seconds from 0 to 60, got '5ms'"),
])
def test_wrong_batch_settings_stop_the_worker_with_one_message(settings, message):
    with pytest.raises(ValueError, match=f"^model recording: {message}$"):
        create_server(Recording(**settings), WorkerConfig(model="recording", listen="127.0.0.1:0"))


# ------------------------------------------------------------------------------- per-study outcomes


class Mixed(Recording):
    """One batch of five: each study's request says how it fails, if it does."""

    name = "mixed"
    max_batch_size = 5

    def infer_batch(self, studies):
        logging.getLogger("tests.batching").info("mixed model: a batch of %d", len(studies))
        return super().infer_batch(studies)

    def answer(self, study):
        kind = study.request.get("kind")
        if kind == "invalid":
            return InvalidInput("study says it is not a chest X-ray")
        if kind == "unsupported":
            return UnsupportedStudy("this model reads CR and DX images, not CT")
        if kind == "broken":  # a box on an image the study does not hold: the result check refuses it
            return Result(bounding_boxes=[BoundingBox("x", "1.2.3.4", [0, 0], [2, 2])])
        if kind == "raises":
            return RuntimeError("the network met a NaN")
        return super().answer(study)


def test_each_study_of_a_batch_fails_or_succeeds_alone(worker, caplog):
    caplog.handler.addFilter(RequestTagFilter())
    caplog.set_level(logging.INFO)
    model = Mixed()
    server, calls = worker(model)
    kinds = ["ok", "invalid", "unsupported", "broken", "raises"]
    futures = dict(zip(kinds, (calls.start(n, kind=kind)[1] for n, kind in enumerate(kinds)), strict=True))

    assert futures["ok"].result(timeout=60).json["study_ml_json"]["n"] == 0
    errors = {kind: failure(futures[kind]) for kind in kinds[1:]}
    assert [sorted(batch) for batch in model.batches] == [[0, 1, 2, 3, 4]]  # all in one batch
    expected = {
        "invalid": (grpc.StatusCode.INVALID_ARGUMENT, "bad_request", "study says it is not a chest X-ray"),
        "unsupported": (grpc.StatusCode.FAILED_PRECONDITION, "unprocessable_study", "reads CR and DX images"),
        "broken": (grpc.StatusCode.INTERNAL, "bad_worker_answer", "breaks the Arterys protocol"),
        "raises": (grpc.StatusCode.UNKNOWN, "model_error", "RuntimeError: the network met a NaN"),
    }
    for kind, (code, error_code, text) in expected.items():
        error = errors[kind]
        assert (error.code(), trailer(error, "error-code")) == (code, error_code), kind
        assert text in error.details(), (kind, error.details())
    for name in ("ok", "invalid_input", "unprocessable", "invalid_result", "model_error"):
        assert outcome(server, "mixed", name) == 1, name

    # Log tags: a line about one study carries its own input hash; the model's line, every hash of the batch.
    hashes = {kind: trailer(errors[kind], "input-hash") for kind in errors}
    raised = [r for r in caplog.records if r.getMessage() == "the model raised"]
    assert [r.input_hash for r in raised] == [hashes["raises"]]
    (batch_line,) = [r for r in caplog.records if r.getMessage() == "mixed model: a batch of 5"]
    assert set(hashes.values()) < set(batch_line.input_hash.split(","))
    assert len(batch_line.input_hash.split(",")) == 5 and batch_line.request_id == "test"


class RaisingForOne(Recording):
    """Written as a loop that raises, the way `infer` would: the worker must still fail only that study."""

    name = "raising"
    max_batch_size = 3

    def infer_batch(self, studies):
        self.batches.append([s.request.get("n") for s in studies])
        for study in studies:
            if study.request.get("bad"):
                raise InvalidInput(f"study {study.request['n']} has no lungs")
        return [self.answer(s) for s in studies]


def test_a_batch_that_raises_is_run_again_study_by_study(worker, caplog):
    model = RaisingForOne()
    server, calls = worker(model)
    futures = [calls.start(n, bad=n == 1)[1] for n in range(3)]
    assert futures[0].result(timeout=60).json["study_ml_json"]["n"] == 0
    assert futures[2].result(timeout=60).json["study_ml_json"]["n"] == 2
    error = failure(futures[1])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "study 1 has no lungs" in error.details()
    assert sorted(model.batches[0]) == [0, 1, 2] and sorted(model.batches[1:]) == [[0], [1], [2]]
    assert any(r.levelno == logging.WARNING and "infer_batch raised InvalidInput for a batch of 3 studies"
               in r.getMessage() for r in caplog.records)
    assert outcome(server, "raising", "ok") == 2 and outcome(server, "raising", "invalid_input") == 1


class ShortAnswer(Recording):
    name = "short"
    max_batch_size = 2

    def infer_batch(self, studies):
        return [Result()]


def test_an_answer_list_of_the_wrong_length_fails_its_batch_and_the_worker_serves_on(worker):
    server, calls = worker(ShortAnswer())
    futures = [calls.start(n)[1] for n in range(2)]
    for error in map(failure, futures):
        assert error.code() == grpc.StatusCode.UNKNOWN
        assert "infer_batch() returned 1 answers for a batch of 2 studies" in error.details()
    assert outcome(server, "short", "model_error") == 2


# ------------------------------------------------------------------------ cancellation and deadlines


def test_a_study_whose_caller_has_gone_is_dropped_from_a_batch_not_yet_started(worker):
    model = Recording(max_batch_size=3, max_batch_delay=0.02)
    model.gate.clear()
    server, calls = worker(model, concurrency=1)
    _, first = calls.start(0)
    wait_for(lambda: model.batches == [[0]], what="the first batch to hold the model")

    gone, gone_result = calls.start(1)
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 2, what="study 1 to wait for the model")
    gone.cancel()
    assert failure(gone_result).code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: outcome(server, "recording", "cancelled") == 1, what="study 1's call to end")
    _, later = calls.start(2)
    wait_for(lambda: sample(server, "worker_inflight_inferences") == 2, what="study 2 to wait for the model")

    model.gate.set()
    assert first.result(timeout=60).json["study_ml_json"]["n"] == 0
    assert later.result(timeout=60).json["study_ml_json"]["n"] == 2
    assert model.batches == [[0], [2]]  # the model never saw study 1
    assert not sample(server, "worker_model_overruns_total", model="recording")


class Watching(Recording):
    """Notes each study's remaining time when its batch starts and whether it was cancelled when it ends."""

    name = "watching"
    max_batch_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.remaining, self.cancelled = {}, {}

    def infer_batch(self, studies):
        self.remaining = {s.request["n"]: s.time_remaining() for s in studies}
        answers = super().infer_batch(studies)
        self.cancelled = {s.request["n"]: s.is_cancelled() for s in studies}
        return answers


def test_each_study_of_a_batch_keeps_its_own_deadline(worker):
    model = Watching()
    model.gate.clear()
    server, calls = worker(model)
    _, short = calls.start(0, timeout=3)
    _, long = calls.start(1, timeout=60)
    assert failure(short).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: outcome(server, "watching", "deadline_exceeded") == 1, what="the worker to end the short call")
    model.gate.set()
    assert long.result(timeout=60).json["study_ml_json"]["n"] == 1
    assert [sorted(batch) for batch in model.batches] == [[0, 1]]
    assert model.remaining[0] < 3 < model.remaining[1]
    assert model.cancelled == {0: True, 1: False}
    wait_for(lambda: sample(server, "worker_model_overruns_total", model="watching") == 1,
             what="the short study's overrun to be counted")
    assert outcome(server, "watching", "ok") == 1


# ---------------------------------------------------------------------------------------- tracing


def test_each_study_keeps_its_trace_and_the_batch_span_links_them(tmp_path, parts):
    """A worker process exporting to a collector; two calls of two traces are answered by one batch."""
    traces = ["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"]
    with Collector() as collector:
        worker = start_worker(tmp_path, "tests.models:BatchingTracedModel", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
        try:
            stub = stub_for(worker.port)
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(lambda trace_id: collect(stub.Infer(
                    request_messages({"n": trace_id}, parts), timeout=60,
                    metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),))), trace_id)
                    for trace_id in traces]
                answers = [future.result(timeout=60) for future in futures]
            spans = collector.wait_for(lambda spans: len([s for s in spans if s.name == "model.forward"]) == 1)
            spans = collector.wait_for(lambda spans: len([s for s in spans if s.kind == "SERVER"]) == 2)
        finally:
            worker.stop()

    by_trace = {trace_id: {s.name: s for s in spans if s.trace_id == trace_id} for trace_id in traces}
    (batch,) = [s for s in spans if s.name == "infer_batch"]
    (forward,) = [s for s in spans if s.name == "model.forward"]
    for trace_id, answer in zip(traces, answers, strict=True):
        mine = by_trace[trace_id]
        assert {"arterys.inference.v1.Inference/Infer", "receive", "queue", "infer", "check", "send"} <= set(mine)
        assert mine["infer"].attributes["arterys.batch_size"] == 2
        assert mine["arterys.inference.v1.Inference/Infer"].attributes["arterys.input_hash"] == answer.result.input_hash
        assert (trace_id, mine["infer"].span_id) in batch.links
    assert batch.attributes["arterys.batch_size"] == 2 and len(batch.links) == 2
    assert (forward.trace_id, forward.parent_id) == (batch.trace_id, batch.span_id)
    assert forward.attributes["model.studies"] == 2
    # The model's line is about both studies: both input hashes and both trace ids.
    (line,) = [line for line in worker.log().splitlines() if "batching model inferring 2 studies" in line]
    for trace_id, answer in zip(traces, answers, strict=True):
        assert answer.result.input_hash in line and trace_id in line

"""The gRPC Inference servicer: a thin adapter (admit, receive, queue, infer, check, send).

Every failure leaves as one status code with a message a person can act on (see the .proto for the
table); the model raising never takes the worker down. Cancellation and deadlines are noticed while
receiving, while queued and before and during sending: a result nobody waits for is not sent.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from contract.logs import request_tags, set_tags
from contract.result_json import to_proto
from worker.admission import Admission
from worker.api import InvalidInput, Model, Result, UnsupportedStudy
from worker.metrics import WorkerMetrics
from worker.receive import (
    HashMismatch,
    StreamError,
    StudyPathNotFound,
    StudyPathRefused,
    read_study_path,
    receive_parts,
)
from worker.results import InvalidResult, WireResult, checked, from_legacy, from_result
from worker.study import Study, monotonic_deadline, parse_request_json

log = logging.getLogger("worker.inference")

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough to amortise gRPC Python's per-message cost (DESIGN.md)


@dataclass
class ServicerConfig:
    default_command: str = ""
    study_root: str | None = None
    spool_dir: str | None = None
    chunk_size: int = CHUNK_SIZE


class Abort(Exception):
    """Ends the call with `code`; `outcome` labels the metric."""

    def __init__(self, code: grpc.StatusCode, message: str, outcome: str) -> None:
        super().__init__(message)
        self.code, self.message, self.outcome = code, message, outcome


MAX_OPEN_COMMAND_LABELS = 20  # label values for a model without a command list; others become "other"


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(self, model: Model, admission: Admission, metrics: WorkerMetrics, config: ServicerConfig) -> None:
        self.model = model
        self.model_name = model.describe_name()
        self.admission = admission
        self.metrics = metrics
        self.config = config
        self.loaded = threading.Event()
        self.commands = tuple(model.commands)
        self.default_command = config.default_command or model.default_command
        self._open_labels: set[str] = set()
        self._label_lock = threading.Lock()

    # --------------------------------------------------------------------------------------- Describe

    def Describe(self, request, context):
        if not self.loaded.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return pb.ModelDescription(
            name=self.model_name,
            version=self.model.version,
            commands=self.commands,
            default_command=self.default_command,
        )

    # ------------------------------------------------------------------------------------------ Infer

    def Infer(self, request_iterator, context) -> Iterator[pb.InferResponse]:
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        call = _Call(self, context, cancelled)
        with request_tags(request_id=uuid.uuid4().hex[:12]):
            try:
                yield from call.run(request_iterator)
                call.outcome = call.outcome or "ok"
            except Abort as abort:
                call.outcome = abort.outcome
                serious = abort.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
                level = logging.ERROR if serious else logging.INFO
                log.log(level, "inference failed (%s): %s", abort.code.name, abort.message)
                context.abort(abort.code, abort.message)
            except Exception:
                call.outcome = "worker_error"  # not "cancelled": the worker itself failed (gRPC sends UNKNOWN)
                log.exception("inference failed: unexpected error in the worker")
                raise
            finally:
                call.finish()

    def metric_command(self, command: str | None) -> str:
        """The `command` label, from a bounded set: a request cannot mint label values."""
        if command is None:
            return "unread"  # refused (loading, busy) before its header was read
        if command in self.commands or command == self.default_command:
            return command or "none"
        if not self.commands:
            # A model that declares no commands takes any: label the first few seen, fold the rest.
            with self._label_lock:
                if command in self._open_labels or len(self._open_labels) < MAX_OPEN_COMMAND_LABELS:
                    self._open_labels.add(command)
                    return command
            return "other"
        return "unknown"


class _Call:
    """One Infer call: its stages, timings, temporary folder and outcome."""

    def __init__(self, servicer: InferenceServicer, context, cancelled: threading.Event) -> None:
        self.s = servicer
        self.context = context
        self.cancelled = cancelled
        self.command: str | None = None  # None until the header has been read
        self.outcome = ""
        self.ticket = None
        self.folder: str | None = None

    def stopped(self) -> bool:
        return self.cancelled.is_set() or not self.context.is_active()

    @contextmanager
    def stage(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.s.metrics.duration.labels(self.s.model_name, name).observe(time.monotonic() - started)

    def run(self, messages: Iterator[pb.InferRequest]) -> Iterator[pb.InferResponse]:
        if not self.s.loaded.is_set():
            raise Abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry shortly", "unavailable")
        self.ticket = self.s.admission.admit()
        if self.ticket is None:
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the worker is busy: {self.s.admission.concurrency} inference(s) running and "
                f"{self.s.admission.queue_size} queued; retry later",
                "rejected",
            )
        header = self._header(messages)
        with self.stage("receive"):
            study = self._receive(header, messages)
        log.info("received %d instance(s), %d attachment(s), command %r",
                 len(study.instances), len(study.attachments), study.command)
        with self.stage("queue"):
            if not self.ticket.acquire(self.stopped):
                raise self._gone("while queued")
        with self.stage("infer"):
            wire = self._infer(study)
        if self.stopped():
            raise self._gone("before the result was sent")
        with self.stage("send"):
            yield from self._send(wire)

    def _header(self, messages) -> pb.RequestHeader:
        first = next(messages, None)
        if first is None or first.WhichOneof("message") != "header":
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "the request stream must start with a header",
                        "invalid_input")
        header = first.header
        if header.request_id:
            set_tags(request_id=header.request_id)  # the bridge's id: one id across both logs
        self.command = header.inference_command or self.s.default_command
        if self.s.commands and self.command not in self.s.commands:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown inference_command {self.command!r}; this model accepts: {', '.join(self.s.commands)}",
                "invalid_input",
            )
        return header

    def _receive(self, header: pb.RequestHeader, messages) -> Study:
        try:
            request = parse_request_json(bytes(header.request_json))
            self.folder = tempfile.mkdtemp(prefix="infer-", dir=self.s.config.spool_dir)
            # The same stream rules for both forms: an end message whose count and hash match what came
            # (for studyPath: no parts, and the hash of the JSON alone, as PROTOCOL.md defines it).
            parts = receive_parts(messages, bytes(header.request_json), Path(self.folder),
                                  self.s.metrics.received_bytes.inc)
            input_hash = parts.input_hash
            if header.study_path:
                if parts.instances or parts.attachments:
                    raise StreamError("a studyPath request names its study by path and carries no parts")
                instances, attachments = read_study_path(header.study_path, self.s.config.study_root), []
            else:
                instances, attachments = parts.instances, parts.attachments
        except InvalidInput as error:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, str(error), "invalid_input") from error
        except HashMismatch as error:
            raise Abort(grpc.StatusCode.DATA_LOSS, str(error), "data_loss") from error
        except StudyPathRefused as error:
            raise Abort(grpc.StatusCode.PERMISSION_DENIED, str(error), "invalid_input") from error
        except StudyPathNotFound as error:
            raise Abort(grpc.StatusCode.NOT_FOUND, str(error), "invalid_input") from error
        if self.stopped():
            raise self._gone("while the study was arriving")
        set_tags(input_hash=input_hash)
        return Study(
            request=request,
            command=self.command,
            input_hash=input_hash,
            instances=instances,
            attachments=attachments,
            route=header.route or "/",
            _cancelled=self.cancelled,
            _deadline=monotonic_deadline(self.context.time_remaining),
        )

    def _infer(self, study: Study) -> WireResult:
        try:
            answer = self.s.model.infer(study)
        except InvalidInput as error:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, str(error), "invalid_input") from error
        except UnsupportedStudy as error:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, str(error), "unprocessable") from error
        except Exception as error:  # the model's bug must not take the worker down
            log.exception("the model raised")
            message = f"the model raised {type(error).__name__}: {error}"
            raise Abort(grpc.StatusCode.UNKNOWN, message, "model_error") from error
        try:
            if isinstance(answer, Result):
                result_json, binaries = from_result(answer)
            elif isinstance(answer, tuple) and len(answer) == 2:
                result_json, binaries = from_legacy(*answer)
            else:
                raise InvalidResult(
                    [f"infer() must return a Result or a (json, buffers) pair, got {type(answer).__name__}"]
                )
            return checked(result_json, binaries, study.index())
        except InvalidResult as error:
            raise Abort(grpc.StatusCode.INTERNAL, str(error), "invalid_result") from error

    def _send(self, wire: WireResult) -> Iterator[pb.InferResponse]:
        sizes = [len(b) for b in wire.binaries]
        yield pb.InferResponse(result=to_proto(wire.json, sizes))
        step = self.s.config.chunk_size
        for index, view in enumerate(wire.binaries):
            for start in range(0, len(view), step):
                if self.stopped():
                    raise self._gone("while the result was being sent")
                data = bytes(view[start : start + step])
                self.s.metrics.sent_bytes.inc(len(data))
                yield pb.InferResponse(binary=pb.BinaryChunk(part_index=index, data=data))

    def _gone(self, when: str) -> Abort:
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            return Abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"the deadline passed {when}", "deadline_exceeded")
        return Abort(grpc.StatusCode.CANCELLED, f"the caller cancelled {when}", "cancelled")

    def finish(self) -> None:
        if self.ticket is not None:
            self.ticket.release()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        command = self.s.metric_command(self.command)
        self.s.metrics.inferences.labels(self.s.model_name, command, self.outcome or "cancelled").inc()

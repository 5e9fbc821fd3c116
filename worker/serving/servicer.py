"""The gRPC Inference servicer: a thin adapter (admit, receive, queue, infer, check, send), on asyncio.

One event loop carries every call's messages; the model runs on its own threads (`concurrency` of them)
and the heavy per-byte work (hashing, spooling, header parsing, result checks) on a few I/O threads, so
a large study arriving never delays another call's health check or answer. Every failure leaves as one
status code chosen by worker/serving/errors.py, with its stable error code in the trailing metadata; the model
raising never takes the worker down. Cancellation and deadlines are noticed at every stage; the model
sees them through `study.is_cancelled()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from contract import metadata
from contract import wire as contract_wire
from contract.errors import short, status_message
from contract.limits import BUNDLE_MESSAGES, CHUNK_BYTES
from contract.result_json import to_proto
from service_runtime.grpc_aio import STREAM_BROKE
from service_runtime.logs import clean_request_id, request_tags, set_tags, study_names_scope
from service_runtime.malloc import ReleaseWhenIdle
from worker.sdk.model import Model, Result
from worker.sdk.refusals import InvalidInput, UnsupportedStudy
from worker.sdk.study import Attachment, Instance, Study
from worker.serving import errors
from worker.serving.admission import Admission, Ticket
from worker.serving.batching import Batcher
from worker.serving.config import StudyLimits, WorkerConfig
from worker.serving.dicom_export import UnknownOutputFormat, output_formats
from worker.serving.instances import NotDicom, parse_instance
from worker.serving.metrics import STAGES, WorkerMetrics
from worker.serving.rate import MinimumRate
from worker.serving.receive import (
    Ingest,
    ReceivedPart,
    find_study_path,
    parse_request_json,
    receive_parts,
    unbundled,
)
from worker.serving.results import WireResult, answer_bytes, checked, from_legacy, from_result
from worker.serving.spool import Spool, StoreBudget
from worker.serving.stow import StowSender
from worker.serving.tracing import CallTrace

log = logging.getLogger("worker.inference")
# Sent to the bridge with each admission, so that its log names the worker a failed call was on: the pod's
# name in Kubernetes, the container's id in compose.
WORKER_NAME = socket.gethostname()

# Answers up to this size are checked on the loop; bigger ones (label masks are scanned) on an I/O thread.
CHECK_INLINE_BYTES = 4 << 20
# A call queued for the model ends this much before its deadline, so that its own message gets through.
DEADLINE_MARGIN = 0.25
MAX_OPEN_COMMAND_LABELS = 20  # label values for a model without a command list; others become "other"
# Once no call has been admitted for this long, free heap memory goes back to the kernel (service_runtime/malloc.py).
IDLE_TRIM_SECONDS = 1.0


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(self, model: Model, admission: Admission, metrics: WorkerMetrics, config: WorkerConfig,
                 model_threads: ThreadPoolExecutor, io_threads: ThreadPoolExecutor, batcher: Batcher | None = None,
                 spool_root: Path | None = None, stow: StowSender | None = None) -> None:
        self.model = model
        self.store: StoreBudget = admission.store
        self.model_name = model.describe_name()
        self.admission = admission
        self.metrics = metrics
        self.config = config
        self.model_threads = model_threads
        self.io_threads = io_threads
        self.batcher = batcher  # a model with infer_batch gets its studies through it (worker/serving/batching.py)
        self.spool_root = spool_root  # this process's folder of the spool directory (worker/serving/spool.py)
        self.stow = stow  # the answers' DICOM objects also go to a PACS (worker/serving/stow.py)
        self.loaded = False
        self.commands = tuple(model.commands)
        self.default_command = config.default_command or model.default_command
        self._open_labels: set[str] = set()
        # Labelled children looked up once: a label lookup per stage per call showed in profiles.
        self.stage_timers = {stage: metrics.duration.labels(self.model_name, stage) for stage in STAGES}
        metrics.start_inferences(self.model_name, self.known_command_labels(), errors.OUTCOMES)
        self.memory_budget = (config.limits.max_study_bytes if getattr(model, "study_in_memory", False)
                              else config.spool_memory_bytes)
        # What a burst (or an attack) made the worker allocate goes back to the kernel once no call is left.
        self._release = ReleaseWhenIdle(lambda: self.admission.admitted, IDLE_TRIM_SECONDS)

    def call_left(self) -> None:
        """An admitted call has ended."""
        self._release.ended()

    # --------------------------------------------------------------------------------------- Describe

    async def Describe(self, request, context):
        if not self.loaded:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return pb.ModelDescription(name=self.model_name, version=self.model.version, commands=self.commands,
                                   default_command=self.default_command)

    # ------------------------------------------------------------------------------------------ Infer

    async def InferWhole(self, request, context) -> None:
        """Infer, with the whole request stream in one message (a bundle): read exactly as Infer reads it. Parked,
        the call keeps its study: admission counts it (worker/serving/admission.py)."""
        async def the_one_message():
            yield request

        await self.Infer(the_one_message(), context, contract_wire.held_bytes(request))

    async def Infer(self, request_iterator: AsyncIterator[pb.InferRequest], context, holds: int = 0) -> None:
        call = _Call(self, context, holds)
        sent_id = metadata.value(context.invocation_metadata(), metadata.REQUEST_ID)
        # study_names_scope: what of the study identifies a patient (file names, UIDs) is kept out of every line
        # logged while the call is handled (worker/serving/identifiers.py).
        with request_tags(request_id=clean_request_id(sent_id), trace_id=call.trace.trace_id), call.trace, \
                study_names_scope():
            try:
                await call.run(unbundled(request_iterator))
                call.outcome = "ok"
            except errors.StreamEnded as error:
                if await call.hung_up():
                    call.outcome = call.gone_outcome()
                    log.info("the caller is gone (%s) %s", call.outcome, call.stage_name)
                    return
                await self._refuse(call, error)
            except errors.WorkerError as error:
                await self._refuse(call, error)
            except asyncio.CancelledError:
                call.outcome = call.gone_outcome()
                log.info("the caller is gone (%s) %s", call.outcome, call.stage_name)
                raise
            except STREAM_BROKE:
                # A read or write failed in the transport: the caller hung up (or its connection broke) while
                # the operation was under way (service_runtime/grpc_aio.py). Nothing can be sent on it any more.
                call.outcome = call.gone_outcome()
                log.info("the caller is gone (%s, the stream broke) %s", call.outcome, call.stage_name)
            except Exception as error:
                call.outcome = "worker_error"
                call.trace.failed(error)
                log.exception("inference failed: unexpected error in the worker", extra={"study_data": True})
                call.finish()
                context.set_trailing_metadata(call.trailers(errors.WorkerError.error_code))
                await context.abort(errors.WorkerError.status, "the worker failed unexpectedly; see its log")
            finally:
                call.finish()

    @staticmethod
    async def _refuse(call: _Call, error: errors.WorkerError) -> None:
        """Ends the call with the error's status, code and message, counted and logged first."""
        call.outcome = error.outcome
        call.trace.failed(error)
        serious = isinstance(error, (errors.ModelFailed, errors.InvalidResult))
        # Refusals of a busy worker are routine (the bridge tries again): the metrics count them.
        level = logging.ERROR if serious else logging.DEBUG if isinstance(error, errors.Busy) else logging.INFO
        message = status_message(error.message)  # bounded: it leaves in the trailing metadata
        log.log(level, "inference failed (%s): %s", error.status.name, message, extra={"study_data": error.study_data})
        call.finish()  # before the status leaves: whoever sees it sees the metrics too
        call.context.set_trailing_metadata(call.trailers(error.error_code))
        await call.context.abort(error.status, message)

    async def offload(self, big: bool, function, *args):
        """Runs `function` on an I/O thread when the work is big (the loop keeps serving other calls), inline
        when it is small (a hop to a thread and back would cost more)."""
        if not big:
            return function(*args)
        # In a copy of the call's context: what the work logs (a library's warning too) carries its tags.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.io_threads, context.run, function, *args)

    def known_command_labels(self) -> list[str]:
        """The `command` labels known before any call: the declared commands and the fallbacks."""
        labels = [self.metric_command(command) for command in dict.fromkeys((*self.commands, self.default_command))
                  if command or not self.commands]
        return list(dict.fromkeys([*labels, "unread", *(["unknown"] if self.commands else [])]))

    def metric_command(self, command: str | None) -> str:
        """The `command` label, from a bounded set: a request cannot mint label values."""
        if command is None:
            return "unread"  # refused (loading, busy) before its header was read
        if command in self.commands or command == self.default_command:
            return command or "none"
        if not self.commands:
            # A model that declares no commands takes any: label the first few seen, fold the rest.
            if command in self._open_labels or len(self._open_labels) < MAX_OPEN_COMMAND_LABELS:
                self._open_labels.add(command)
                return command
            return "other"
        return "unknown"


class _Call:
    """One Infer call: its stages, timings, ticket, spool and outcome."""

    def __init__(self, servicer: InferenceServicer, context, holds: int = 0) -> None:
        self.s = servicer
        self.context = context
        self.holds = holds  # study bytes the call came with (InferWhole), kept while it waits for a place
        self.command: str | None = None  # None until the header has been read
        self.outcome = ""
        self.stage_name = "before its header"
        self.ticket: Ticket | None = None
        self.spool: Spool | None = None
        self.input_hash = ""
        self.request: dict = {}  # the request JSON, read with the header
        self.formats: list[str] = []  # the answer formats it asks for
        self.finished = False
        self.overran = False  # the call ended while its model was still running
        remaining = context.time_remaining()
        self.deadline_at = time.monotonic() + remaining if remaining is not None else None
        self.gone = threading.Event()  # set when the call ends for any reason: study.is_cancelled() reads it
        context.add_done_callback(lambda _context: self.gone.set())
        self.trace = CallTrace.start(context.invocation_metadata(), servicer.model_name)  # spans, if tracing is on

    # -------------------------------------------------------------------------------------- stages

    @contextmanager
    def stage(self, name: str):
        self.stage_name = f"while {name}"
        started = time.monotonic()
        try:
            with self.trace.stage(name):
                yield
        finally:
            self.s.stage_timers[name].observe(time.monotonic() - started)

    async def run(self, messages: AsyncIterator[pb.InferRequest]) -> None:
        if not self.s.loaded:
            raise errors.NotReady("the model is still loading; retry shortly")
        # The header is read before anything is decided: the sender's write of it has then completed, so a
        # refusal reaches it with its own status (a refusal racing that write surfaces as INTERNAL).
        header = await self._header(messages)
        self.ticket = await self._admission(header.admission_wait_ms / 1000)
        # Admitted: tell the sender now, before it sends any study byte, so that a refusal (above) can be
        # retried elsewhere by a sender that has lost nothing.
        await self.context.send_initial_metadata(((metadata.ADMITTED, metadata.YES), (metadata.WORKER, WORKER_NAME),
                                                  (metadata.READS_BUNDLES, metadata.YES)))
        with self.stage("receive"):
            study = await self._receive(header, messages)
        log.debug("received %d instance(s), %d attachment(s), command %r",
                  len(study.instances), len(study.attachments), study.command)
        self.trace.received(len(study.instances), len(study.attachments))
        with self.stage("queue"):
            await self._wait_for_the_model()
        with self.stage("infer"):
            answer = await self._infer(study)
        with self.stage("check"):
            wire = await self._check(answer, study)
            if "dicom" in self.formats:
                wire = await self._export(wire, study)
        with self.stage("send"):
            await self._send(wire)
        if self.s.stow is not None:  # after the answer, never delaying it (worker/serving/stow.py)
            from worker.serving.stow import dicom_objects

            self.s.stow.submit(dicom_objects(wire.json, wire.binaries))

    async def _header(self, messages) -> pb.RequestHeader:
        idle = self.s.config.idle_timeout_seconds
        try:
            async with asyncio.timeout(idle):
                first = await anext(messages)
        except StopAsyncIteration:
            first = None
        except TimeoutError:
            raise errors.Idle(f"the request stream sent no header for {idle:g} s and was ended") from None
        if first is None:
            raise errors.StreamEnded("the request stream must start with a header")
        if type(first) is memoryview or first.WhichOneof("message") != "header":  # a chunk arrives as a view
            raise errors.BadRequest("the request stream must start with a header")
        header = first.header
        set_tags(request_id=clean_request_id(header.request_id))  # the bridge's id: one id across both logs
        limits = self.s.config.limits
        if len(header.request_json) > limits.max_json_bytes:
            raise errors.TooLarge(f"the request JSON exceeds {limits.max_json_bytes} bytes")
        if len(header.inference_command) > limits.max_command_length:
            raise errors.BadRequest(f"inference_command is {len(header.inference_command)} characters long; "
                                    f"at most {limits.max_command_length} are accepted")
        self.command = header.inference_command or self.s.default_command
        if self.s.commands and self.command not in self.s.commands:
            raise errors.BadRequest(f"unknown inference_command {short(self.command)!r}; this model accepts: "
                                    f"{', '.join(self.s.commands)}")
        # Read here, before the call is admitted: a refusal after it would race the study's first bytes, which
        # the sender starts streaming on admission (the bridge then sees gRPC's "Internal error", not the 400).
        self.request = parse_request_json(bytes(header.request_json))
        try:
            self.formats = output_formats(self.request, self.s.config.output_formats)
        except UnknownOutputFormat as error:
            raise errors.BadRequest(str(error)) from error
        return header

    async def _admission(self, asked_wait: float) -> Ticket:
        """A place for this call, at once or, when its header asks to wait, once one frees (worker/serving/
        admission.py); else the refusal it would have had at once. The wait ends a moment before the caller's
        deadline, so that the refusal reaches it, and after --idle-timeout-seconds at most: a caller cannot
        keep a call parked for longer than it may keep one silent."""
        admission = self.s.admission
        wait = min(asked_wait, self.s.config.idle_timeout_seconds)
        if (remaining := self.time_remaining()) is not None:
            wait = min(wait, remaining - DEADLINE_MARGIN)
        if wait > 0:
            self.stage_name = "while waiting for a place"
            ticket = await admission.wait_for_place(wait, self.holds)
        else:
            ticket = admission.admit()
        if ticket is not None:
            return ticket
        if admission.closed:
            raise errors.NotReady("the worker is shutting down; retry elsewhere")
        if self.s.store.spool_full:
            raise errors.SpoolFull(self.s.store.spool_full_message())
        raise errors.Busy(f"the worker is busy: {admission.refusal(self.holds if wait > 0 else 0)}; retry later or "
                          "elsewhere")

    async def _receive(self, header: pb.RequestHeader, messages) -> Study:
        config = self.s.config
        request = self.request
        self.spool = Spool(self.s.spool_root, self.s.memory_budget, self.s.store)
        spool, limits = self.spool, config.limits

        def parsed(part: ReceivedPart):  # each part as it completes, while the next ones arrive
            meta = dict(content_type=part.content_type, filename=part.filename, name=part.name, data=part.data,
                        spool=spool)
            if part.kind == pb.PART_KIND_DICOM:
                return parse_instance(part.index, part.path, limits=limits, **meta)
            return Attachment(part.index, part.path, **meta)

        ingest = Ingest(bytes(header.request_json), spool, parsed)
        received = await receive_parts(messages, ingest, limits, config.idle_timeout_seconds,
                                       self.s.metrics.received_bytes.inc,
                                       MinimumRate(config.min_receive_rate, config.receive_window_seconds))
        self.input_hash = received.input_hash
        set_tags(input_hash=received.input_hash)
        if header.study_path:
            if received.parts:
                raise errors.BadRequest("a studyPath request names its study by path and carries no parts")
            instances, attachments = await self.s.offload(
                True, _read_folder, header.study_path, config.study_root, config.limits)
        else:
            instances, attachments = _sorted_parts(ingest.results)
        return Study(
            request=request, command=self.command, input_hash=received.input_hash, instances=instances,
            attachments=attachments, route=header.route or "/", _cancelled=self.gone,
            _deadline=self.time_remaining,
        )

    async def _wait_for_the_model(self) -> None:
        """Queues for a model slot. Ends the call a moment before its deadline, with a message that says why it
        waited (gRPC's own deadline error cannot): behind other calls, or behind a model still running for a
        caller that has already given up."""
        remaining = self.time_remaining()
        if remaining is None:
            await self.ticket.slot()
            return
        try:
            async with asyncio.timeout(max(remaining - DEADLINE_MARGIN, 0)):
                await self.ticket.slot()
        except TimeoutError:
            overruns = self.s.admission.overrunning
            reason = (f"behind {overruns} inference(s) still running after their own callers gave up (the model "
                      "does not stop when study.is_cancelled() turns true)" if overruns
                      else f"behind {self.s.admission.running} running and "
                           f"{self.s.admission.arrived - self.s.admission.running - 1} other queued call(s)")
            raise errors.DeadlineExceeded(f"the deadline passed while this call waited for the model, {reason}; "
                                          "the bridge's --deadline-seconds bounds every call") from None

    async def _infer(self, study: Study):
        """Runs the model on its thread. The slot is given back when infer() returns, whenever that is: a
        model that ignores cancellation keeps its slot (it is still running) and is counted as an overrun."""
        ticket, loop = self.ticket, asyncio.get_running_loop()
        answer = loop.create_future()
        context = contextvars.copy_context()  # the request's log tags, for the model's own log lines

        def returned(future) -> None:  # on the model's thread: one wake-up of the loop for everything
            # In the request's context (a copy): a late return is logged with the request's tags.
            try:
                loop.call_soon_threadsafe(self._model_returned, ticket, future, answer, context=context.copy())
            except RuntimeError:  # the loop is closed: the worker stopped while the model overran its call
                context.run(log.info, "the model returned after the worker had stopped (it overran its call)")

        # A batching model's batcher answers each study as the thread pool answers infer(): with a future.
        future = (self.s.batcher.submit(study, context) if self.s.batcher
                  else self.s.model_threads.submit(context.run, self.s.model.infer, study))
        future.add_done_callback(returned)
        try:
            return await answer
        except asyncio.CancelledError:
            if not future.cancel() and not future.done():  # a study not started yet is dropped instead
                self.s.admission.overrunning += 1  # the model runs on for a caller that is gone
                self.overran = True
            raise
        except (InvalidInput, errors.WorkerError) as error:
            raise errors.BadRequest(str(error), study_data=True) from error
        except UnsupportedStudy as error:
            raise errors.Unprocessable(str(error), study_data=True) from error
        except Exception as error:  # the model's bug must not take the worker down
            log.error("the model raised", exc_info=error, extra={"study_data": True})
            raise errors.ModelFailed(f"the model raised {type(error).__name__}: {error}", study_data=True) from error

    def _model_returned(self, ticket: Ticket, future, answer: asyncio.Future) -> None:
        if future.cancelled():  # dropped before the model saw it: its caller has gone
            answer.cancel()
        elif not answer.done():
            error = future.exception()
            answer.set_exception(error) if error is not None else answer.set_result(future.result())
        if self.overran:
            self.s.admission.overrunning -= 1
        if self.gone.is_set() and self.outcome not in ("", "ok") and not future.cancelled():
            self.s.metrics.overruns.labels(self.s.model_name).inc()
            log.warning("the model returned after its call had ended (%s): it kept the model busy; models should "
                        "check study.is_cancelled()", self.outcome)
        ticket.release_slot()

    async def _check(self, answer, study: Study) -> WireResult:
        if not isinstance(answer, (Result, tuple)) or (isinstance(answer, tuple) and len(answer) != 2):
            raise errors.InvalidResult(
                [f"infer() must return a Result or a (json, buffers) pair, got {type(answer).__name__}"])

        def convert() -> WireResult:
            result_json, binaries = from_result(answer) if isinstance(answer, Result) else from_legacy(*answer)
            return checked(result_json, binaries, study.index(), self.s.config.limits.max_result_bytes)

        return await self.s.offload(answer_bytes(answer) > CHECK_INLINE_BYTES, convert)

    async def _export(self, wire: WireResult, study: Study) -> WireResult:
        """The checked answer with DICOM SEG and SR parts (docs/dicom-outputs.md), checked again.

        Always on an I/O thread, whatever the answer's size: highdicom builds a dataset per frame and a
        content tree per finding, tens of milliseconds even for a small study, too long for the loop."""
        keep_arterys = "arterys" in self.formats

        def export() -> WireResult:
            from worker.serving.dicom_export import DicomExportError, export_dicom

            try:
                result_json, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=keep_arterys,
                                                     model_name=self.s.model_name, model_version=self.s.model.version)
            except DicomExportError as error:
                raise errors.Unprocessable(str(error), study_data=True) from error
            return checked(result_json, binaries, study.index(), self.s.config.limits.max_result_bytes)

        return await self.s.offload(True, export)

    async def _send(self, wire: WireResult) -> None:
        sizes = [len(b) for b in wire.binaries]
        result = to_proto(wire.json, sizes)
        result.input_hash = self.input_hash
        await self.context.write(pb.InferResponse(result=result))
        # Chunks of about CHUNK_BYTES; small parts together in one message for a caller that reads bundles.
        bundles = metadata.value(self.context.invocation_metadata(), metadata.READS_BUNDLES) == metadata.YES
        step, pieces, size = CHUNK_BYTES, [], 0
        for index, view in enumerate(wire.binaries):
            for start in range(0, len(view), step):
                pieces.append((index, view[start : start + step]))
                size += len(pieces[-1][1])
                if size >= step or not bundles or len(pieces) == BUNDLE_MESSAGES:
                    await self._send_binaries(pieces, size)
                    pieces, size = [], 0
        if pieces:
            await self._send_binaries(pieces, size)
        self.context.set_trailing_metadata(self.trailers(""))

    async def _send_binaries(self, pieces: list, size: int) -> None:
        await self.context.write(contract_wire.response_binaries(pieces))  # framed with one copy
        self.s.metrics.sent_bytes.inc(size)

    # ------------------------------------------------------------------------------------- endings

    def trailers(self, error_code: str) -> tuple:
        out = ((metadata.INPUT_HASH, self.input_hash),) if self.input_hash else ()
        return out + (((metadata.ERROR_CODE, error_code),) if error_code else ())

    async def hung_up(self, within: float = 0.2) -> bool:
        """Whether the caller cancelled the call, waiting a moment for the news: when a sender hangs up, the
        end of its request stream can arrive just before the cancellation."""
        loop = asyncio.get_running_loop()
        until = loop.time() + within
        while not (self.context.cancelled() or self.gone.is_set()):
            if loop.time() >= until:
                return False
            await asyncio.sleep(0.01)
        return True

    def time_remaining(self) -> float | None:
        """Seconds before the caller's deadline (None: it set none), from the deadline read once at the start."""
        return None if self.deadline_at is None else self.deadline_at - time.monotonic()

    def gone_outcome(self) -> str:
        # The deadline as it was at the start: gRPC may cancel a hair before time_remaining() reaches 0.
        if self.deadline_at is not None and time.monotonic() >= self.deadline_at - 0.1:
            return "deadline_exceeded"
        return "cancelled"

    def finish(self) -> None:
        """Counts the call and frees what it held; once, whichever way the call ended."""
        if self.finished:
            return
        self.finished = True
        self.gone.set()
        if self.ticket is not None:
            self.ticket.leave()
            self.s.call_left()
        if self.spool is not None:
            self.spool.cleanup()
        command = self.s.metric_command(self.command)
        self.s.metrics.inferences.labels(self.s.model_name, command, self.outcome or "cancelled").inc()
        self.trace.end(self.outcome or "cancelled", command, self.input_hash)


def _sorted_parts(parts: list) -> tuple[list, list]:
    """Instances and attachments, each in request order."""
    instances = [part for part in parts if isinstance(part, Instance)]
    _refuse_repeats(instances)
    return instances, [part for part in parts if not isinstance(part, Instance)]


def _read_folder(study_path: str, root, limits: StudyLimits) -> tuple[list, list]:
    instances = []
    # Each file is named by its place among the folder's files in path order, which whoever can read the
    # folder can find; never by its name, which often holds a patient's.
    for number, path in enumerate(find_study_path(study_path, root), start=1):
        try:
            instances.append(parse_instance(len(instances), path, "application/dicom", path.name, limits=limits,
                                            label=f"file {number} of the studyPath folder"))
        except NotDicom:
            continue  # a DICOMDIR, a README: a study's folder may hold other files
    if not instances:
        raise errors.StudyNotFound("the studyPath folder holds no DICOM file")
    _refuse_repeats(instances)
    return instances, []


def _refuse_repeats(instances: list[Instance]) -> None:
    """The same instance twice (one SOP Instance UID) is the sender's mistake: named by their numbers, the UID
    is not quoted (messages reach logs)."""
    seen: dict[str, Instance] = {}
    for instance in instances:
        first = seen.setdefault(instance.sop_instance_uid, instance)
        if first is not instance:
            raise errors.BadRequest(f"{first.label} and {instance.label} are the same instance (they carry one "
                                    "SOPInstanceUID): send each instance once")

"""One inference request: the HTTP body streams to an admitted worker call while it arrives, the answer
streams back.

The JSON part is read first and becomes the call's header; once a worker has admitted the call (see
bridge/admission.py), a task forwards the rest of the body part by part while this one waits for the
worker's result. When the worker says it reads bundles (contract/metadata.py), the request messages made
from one read of the body go as one gRPC message: each gRPC message costs both ends a round of work. A
small study (SMALL_STUDY_BYTES) is read whole first and goes with its header in one message, an InferWhole
call, which needs no round trip for the admission either (a studyPath request too: it has no parts).
Whichever side fails first decides the answer: a body that is malformed, too large, too slow or abandoned
is the client's doing; a call that ends early is the worker's (WorkerFailed). Either failure is raised as
it is and becomes an HTTP answer in one place (bridge/errors.py, `for_failure`). The answer's
Content-Length is exact before any mask byte arrives, and its body (AnswerBody) is counted and reported as
it streams. Memory stays at about one chunk each way; nothing here imports a model or decodes pixels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from arterys_http import media
from arterys_http.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_content_type,
)
from bridge import errors
from bridge.admission import Admitted, admit
from bridge.channel import WorkerChannel
from bridge.config import BridgeLimits
from bridge.http import Request, Response
from bridge.metrics import BridgeMetrics
from bridge.tracing import NO_TRACE, RequestTrace
from bridge.translate import (
    BadWorkerAnswer,
    RequestTranslator,
    encode_answer,
    parse_json_object,
    plan_answer,
    request_header,
)
from contract import inference_pb2 as pb
from contract import metadata, wire
from contract.limits import CHUNK_BYTES
from service_runtime.grpc_aio import CALL_ENDED, StreamCall, retrieve_outcome
from service_runtime.logs import set_tags

log = logging.getLogger("bridge.inference")

ACCEPTED_TYPES = (media.MULTIPART_RELATED, media.MULTIPART_FORM_DATA, media.JSON)
# A body of at most this many bytes (by its Content-Length) is read whole before its call, and goes in one message
# with its header; a larger one streams once admitted, what each read brings in a message of its own.
SMALL_STUDY_BYTES = CHUNK_BYTES


OnAnswerEnd = Callable[[int, bool, str], None]  # (bytes sent, complete, input hash)


class InferenceRequest:
    """Runs one request against a route's workers: `await run()` returns the answer, whose body reports its
    end to `on_answer_end`, or raises what ended the request (bridge/errors.py `for_failure` answers it).
    `metrics` counts the body bytes both ways; `ready_workers` says how many workers the route has now (the
    calls a request may make to get admitted: bridge/admission.py)."""

    def __init__(self, request: Request, route: str, channel: WorkerChannel, limits: BridgeLimits, request_id: str,
                 metrics: BridgeMetrics, on_answer_end: OnAnswerEnd, trace: RequestTrace = NO_TRACE,
                 ready_workers: Callable[[], int] = lambda: 1) -> None:
        self.request = request
        self.route = route
        self.channel = channel
        self.ready_workers = ready_workers
        self.limits = limits
        self.request_id = request_id
        self.metrics = metrics
        self.on_answer_end = on_answer_end
        self.trace = trace

    async def read(self) -> bytes:
        data = await self.request.read()
        self.metrics.request_bytes.inc(len(data))
        return data

    async def run(self) -> Response:
        media_type, params = self._content_type()
        declared = self.request.content_length
        if declared is not None and declared > self.limits.max_body_bytes:
            raise errors.too_large(f"the request body is {declared} bytes; this bridge accepts at most "
                                   f"{self.limits.max_body_bytes}")
        if media_type == media.JSON:
            header, study, forward = await self._study_path()
        else:
            header, study, forward = await self._multipart()
        admitted = await self._admit(header, study)
        if admitted.whole:
            forward = None
        elif study is not None:  # read whole, but the worker takes no InferWhole call: it follows the header
            forward = _sender(study)
        del study  # sent or handed to the sender: not kept while the answer is awaited
        return await self._exchange(admitted.call, forward)

    # ---------------------------------------------------------------------------------- request side

    def _content_type(self) -> tuple[str, dict[str, str]]:
        raw = self.request.header("content-type")
        try:
            media_type, params = parse_content_type(raw) if raw else ("", {})
        except MultipartError as error:  # malformed, not merely another type: the client's mistake to fix
            raise errors.bad_request(f"the Content-Type header is malformed: {error}") from None
        if media_type not in ACCEPTED_TYPES:
            raise errors.unsupported_media_type(raw)
        return media_type, params

    async def _study_path(self):
        body = bytearray()
        while chunk := await self.read():
            body += chunk
            if len(body) > self.limits.max_json_bytes:
                raise errors.too_large(f"a JSON request may be at most {self.limits.max_json_bytes} bytes")
        body = bytes(body)
        study_path = parse_json_object(body, "the request body").get("studyPath")
        if not isinstance(study_path, str) or not study_path:
            raise errors.bad_request(
                "an application/json request must name a studyPath (a folder of DICOM files the worker can read); "
                "to send the DICOM files themselves use multipart/related"
            )
        header = request_header(body, self.route, self.request_id, study_path=study_path)
        return header, [pb.InferRequest(end=pb.RequestEnd(part_count=0))], None

    async def _multipart(self):
        limits = self.limits
        parser = MultipartParser(
            boundary_from_content_type(self.request.header("content-type")), max_body_size=limits.max_body_bytes,
            max_parts=limits.max_parts, max_part_size=limits.max_part_bytes,
        )
        json_part, leftover = await self._read_json_part(parser)
        header = request_header(json_part, self.route, self.request_id)
        translator = RequestTranslator()
        if (self.request.content_length or SMALL_STUDY_BYTES + 1) <= SMALL_STUDY_BYTES:
            messages = list(translator.translate(leftover))
            while data := await self.read():
                messages += translator.translate(parser.feed(data))
            parser.close()
            return header, [*messages, translator.end()], None

        async def forward(call) -> None:
            bundles = await reads_bundles(call)
            messages = list(translator.translate(leftover))
            while True:
                # What is at hand goes before the next read waits for the client, except the body's last
                # messages, which go with the end.
                if messages and not (bundles and self.request.complete):
                    await send(call, messages, bundles)
                    messages = []
                data = await self.read()
                if not data:
                    break
                messages += translator.translate(parser.feed(data))
            parser.close()
            await send(call, [*messages, translator.end()], bundles)
            await call.done_writing()

        return header, None, forward

    async def _read_json_part(self, parser: MultipartParser) -> tuple[bytes, list]:
        """Reads up to the end of the first part (the request JSON); returns it and the events after it."""
        json_part = bytearray()
        started = False
        while True:
            data = await self.read()
            events = parser.feed(data) if data else parser.close()
            for position, event in enumerate(events):
                if isinstance(event, PartStart):
                    if event.content_type not in media.JSON_PART_TYPES:
                        raise errors.bad_request(
                            f"the first part must be the request JSON (application/json), got {event.content_type}"
                        )
                    started = True
                elif isinstance(event, PartData):
                    json_part += event.data
                    if len(json_part) > self.limits.max_json_bytes:
                        raise errors.too_large(f"the request JSON part exceeds {self.limits.max_json_bytes} bytes")
                elif isinstance(event, PartEnd):
                    return bytes(json_part), events[position + 1 :]
            if not data:
                raise errors.bad_request("the request has no parts: the first part must be the request JSON"
                                         if not started else "the body ended inside the request JSON part")

    # ------------------------------------------------------------------------------------ the call

    async def _admit(self, header: pb.RequestHeader, study: list | None) -> Admitted:
        traced = self.trace.call(self.channel.target)  # the call's span; its traceparent goes in the metadata
        try:
            admitted = await admit(self.channel, header, self.limits.deadline_seconds,
                                   ((metadata.REQUEST_ID, self.request_id), (metadata.READS_BUNDLES, metadata.YES),
                                    *traced.metadata),
                                   self.limits.queue_wait_seconds, self.ready_workers(), study)
        except errors.WorkerFailed as refused:
            traced.end(refused.status)
            self._log_failure(refused)
            raise
        except BaseException:
            traced.end(None)
            raise
        traced.follow(admitted.call)
        return admitted

    async def _exchange(self, call: StreamCall, forward) -> Response:
        """Waits for the worker's first message while `forward` (None: nothing left to send) sends the study."""
        if forward is None:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as error:
                raise await self._call_error(call) from error
            except BaseException:
                call.cancel()
                raise
            return await self._answer(call, message, None)
        forwarder = asyncio.ensure_future(forward(call))
        first = asyncio.ensure_future(call.read())
        for task in (forwarder, first):  # either may end with an error after the exchange gave up on it
            task.add_done_callback(retrieve_outcome)
        try:
            await asyncio.wait((forwarder, first), return_when=asyncio.FIRST_COMPLETED)
            if forwarder.done() and forwarder.exception() is not None:
                failure = forwarder.exception()
                if not isinstance(failure, CALL_ENDED):
                    # The body is at fault: the call is cancelled below. Answered here, not raised as it is:
                    # through this frame it would make a cycle (failure -> traceback -> this frame -> forwarder
                    # -> failure) that only the garbage collector frees, with the body pieces the forwarder's
                    # frames hold (+13 MB over 1,000 aborted uploads, tests/test_http_front.py).
                    raise errors.for_failure(failure)
            message = await first  # the worker answered, or ended the call (early: the rest of the body waits)
            if message is not grpc.aio.EOF:
                # A result comes only after the whole study: the forwarder is at most finishing its last
                # write. Let it: cancelling a task inside a write would cancel the call.
                with contextlib.suppress(*CALL_ENDED):
                    await forwarder
        except grpc.aio.AioRpcError as error:
            forwarder.cancel()
            raise await self._call_error(call) from error
        except BaseException:
            first.cancel()
            forwarder.cancel()
            call.cancel()
            raise
        return await self._answer(call, message, forwarder)

    async def _answer(self, call: StreamCall, message, forwarder: asyncio.Future | None) -> Response:
        """The answer whose first message is `message` (or EOF), or what ended the call instead."""
        if message is grpc.aio.EOF:
            if forwarder is not None:
                forwarder.cancel()
            if call.done() and await call.code() != grpc.StatusCode.OK:
                raise await self._call_error(call)
            call.cancel()
            raise errors.bad_worker_answer(["the worker ended the call without a result"])
        if type(message) is list or isinstance(message, wire.Binary) or message.WhichOneof("message") != "result":
            call.cancel()
            raise errors.bad_worker_answer(["the worker's first message is not the result"])
        try:
            layout = plan_answer(message.result)
        except BadWorkerAnswer:
            call.cancel()
            raise
        input_hash = message.result.input_hash
        set_tags(input_hash=input_hash)
        headers = [("Content-Type", layout.content_type), ("X-Request-Id", self.request_id)]
        body = AnswerBody(call, encode_answer(layout, input_hash, _binary_chunks(call)), input_hash,
                          self.metrics.response_bytes.inc, self.on_answer_end)
        return Response(200, headers, body, content_length=layout.content_length())

    async def _call_error(self, call: StreamCall) -> errors.WorkerFailed:
        """What the worker said when it ended an admitted call without an answer, logged."""
        trailing = await call.trailing_metadata()
        input_hash = metadata.value(trailing, metadata.INPUT_HASH)
        if input_hash:
            set_tags(input_hash=input_hash)
        # The worker that admitted the call names itself (its host name): which one failed is in the log.
        failure = errors.WorkerFailed(await call.code(), await call.details() or "",
                                      metadata.value(trailing, metadata.ERROR_CODE), input_hash,
                                      metadata.value(await call.initial_metadata(), metadata.WORKER))
        self._log_failure(failure)
        return failure

    def _log_failure(self, failure: errors.WorkerFailed) -> None:
        """The request's one line about its worker calls having failed (refused before admission: after how many)."""
        # Before admission no worker is named: gRPC's details name the address tried.
        on = f" (worker {failure.worker})" if failure.worker else ""
        status, details = failure.status, failure.details
        tried = f" ({failure.tried})" if failure.tried else ""
        if errors.may_quote_the_study(failure.error_code):
            # Its message is for the client (or, a model's exception, for no one): it may quote the study. The
            # worker logged it, under the same request id, with the study's identifiers hidden.
            log.info("the worker%s ended the call: %s %s (the worker's log has why)%s", on, status.name,
                     failure.error_code, tried)
        elif failure.error_code or status not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            log.info("the worker%s ended the call: %s %s%s", on, status.name, details, tried)
        else:
            log.warning("worker target %s%s: %s %s%s", self.channel.target, on, status.name, details, tried)


async def reads_bundles(call: StreamCall) -> bool:
    """Whether the worker that admitted `call` said it reads bundles."""
    return metadata.value(await call.initial_metadata(), metadata.READS_BUNDLES) == metadata.YES


def _sender(study: list):
    """Sends `study` (the request messages after the header, read whole) once its call is admitted, keeping
    none of it after."""
    async def forward(call) -> None:
        nonlocal study
        messages, study = study, None
        await send(call, messages, await reads_bundles(call))
        del messages
        await call.done_writing()

    return forward


async def send(call: StreamCall, messages: list, bundles: bool) -> None:
    """Writes request `messages` in one gRPC message when the worker reads bundles (or one per BUNDLE_MESSAGES),
    else one by one."""
    if bundles:
        for group in wire.bundles_of(messages):
            await call.write(wire.request_message(group))
    else:
        for message in messages:
            await call.write(wire.request_message((message,)))


async def _binary_chunks(call) -> AsyncIterator:
    """The answer's binary chunks after its result, bundles opened (contract/wire.py `unbundle`)."""
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        try:
            for each in wire.unbundle(message):
                yield _binary(each)
        except wire.NestedBundle:
            raise BadWorkerAnswer(["a bundle of binary chunks holds another bundle"]) from None
        except wire.Refused as refused:
            raise BadWorkerAnswer([f"the worker's answer: {refused}"]) from None


def _binary(message):
    """A binary chunk: `message` as contract/wire.py read it, or the chunk of an `InferResponse`."""
    if isinstance(message, wire.Binary):
        return message
    if message.WhichOneof("message") == "binary":
        return message.binary
    raise BadWorkerAnswer(["a second result message arrived among the binary chunks"])


class AnswerBody:
    """The answer's bytes as they come from the worker's call, counted as they pass (`on_bytes`).

    It ends exactly once: after the last chunk, when its writer closes it early, or when it is closed before
    it ever started (a client gone before the status line, which an async generator's `finally` would miss).
    Ending cancels the call, so that the worker stops sending (a no-op after a complete call), and tells
    `on_end` how many bytes went, whether all did, and the request's input hash."""

    def __init__(self, call: StreamCall, encoded: AsyncIterator[bytes], input_hash: str,
                 on_bytes: Callable[[int], None], on_end: OnAnswerEnd) -> None:
        self._call = call
        self._encoded = encoded
        self.input_hash = input_hash
        self._on_bytes = on_bytes
        self._on_end = on_end
        self._sent = 0
        self._ended = False

    def __aiter__(self) -> AnswerBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self._encoded)
        except StopAsyncIteration:
            self._end(complete=True)
            raise
        except BaseException as error:
            if isinstance(error, (BadWorkerAnswer, grpc.aio.AioRpcError)):
                log.error("the answer broke off while streaming: %s", error)
            await self.aclose()
            raise
        self._sent += len(chunk)
        self._on_bytes(len(chunk))
        return chunk

    async def aclose(self) -> None:
        self._call.cancel()
        try:
            await self._encoded.aclose()
        finally:
            self._end(complete=False)

    def _end(self, complete: bool) -> None:
        if not self._ended:
            self._ended = True
            self._call.cancel()
            self._on_end(self._sent, complete, self.input_hash)

"""One inference request: the HTTP body streams to an admitted worker call while it arrives, the answer
streams back.

The JSON part is read first and becomes the call's header; once a worker has admitted the call (see
bridge/admission.py), a task forwards the rest of the body part by part while this one waits for the
worker's result. Whichever side fails first decides the answer: a body that is malformed, too large, too
slow or abandoned is the client's doing; a call that ends early is the worker's. The answer's
Content-Length is exact before any mask byte arrives. Memory stays at about one chunk each way; nothing
here imports a model or decodes pixels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from arterys_http import media
from arterys_http.multipart import (
    LimitExceeded,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_content_type,
)
from bridge import errors
from bridge.admission import Refused, admit
from bridge.channel import WorkerChannel
from bridge.config import BridgeLimits
from bridge.http import BodyTimeout, ClientGone, Request, Response
from bridge.tracing import NO_TRACE, RequestTrace
from bridge.translate import (
    BadWorkerAnswer,
    InvalidRequest,
    RequestTranslator,
    encode_answer,
    parse_json_object,
    plan_answer,
    request_header,
)
from contract import inference_pb2 as pb
from contract import metadata, wire
from service_runtime.grpc_aio import CALL_ENDED, retrieve_outcome
from service_runtime.logs import set_tags

log = logging.getLogger("bridge.inference")

ACCEPTED_TYPES = (media.MULTIPART_RELATED, media.MULTIPART_FORM_DATA, media.JSON)


def client_error(failure: BaseException) -> errors.ApiError:
    """The answer for a failure of the request body, which is the client's doing."""
    if isinstance(failure, errors.ApiError):
        return failure
    if isinstance(failure, LimitExceeded):
        return errors.too_large(str(failure))
    if isinstance(failure, MultipartError):
        return errors.bad_request(f"malformed multipart body: {failure}")
    if isinstance(failure, InvalidRequest):
        return errors.bad_request(str(failure))
    if isinstance(failure, BodyTimeout):
        return errors.error("request_timeout", str(failure))
    if isinstance(failure, ClientGone):
        return errors.error("client_closed_request", "the client closed the connection")
    raise failure


@dataclass
class Outcome:
    """What the app's log line and metrics need to know about an inference once it is decided."""

    input_hash: str = ""


class InferenceRequest:
    """Runs one request against a route's workers: `await run()` returns the answer or raises errors.ApiError."""

    def __init__(self, request: Request, route: str, channel: WorkerChannel, limits: BridgeLimits, request_id: str,
                 on_request_bytes, trace: RequestTrace = NO_TRACE) -> None:
        self.request = request
        self.route = route
        self.channel = channel
        self.limits = limits
        self.request_id = request_id
        self.on_request_bytes = on_request_bytes
        self.trace = trace
        self.outcome = Outcome()

    async def read(self) -> bytes:
        data = await self.request.read()
        self.on_request_bytes(len(data))
        return data

    async def run(self) -> Response:
        media_type, params = self._content_type()
        declared = self.request.content_length
        if declared is not None and declared > self.limits.max_body_bytes:
            raise errors.too_large(f"the request body is {declared} bytes; this bridge accepts at most "
                                   f"{self.limits.max_body_bytes}")
        try:
            if media_type == media.JSON:
                header, forward = await self._study_path()
            else:
                header, forward = await self._multipart()
        except (MultipartError, InvalidRequest, BodyTimeout, ClientGone) as failure:
            raise client_error(failure) from None
        call = await self._admit(header)
        return await self._exchange(call, forward)

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

        async def forward(call) -> None:
            await call.write(pb.InferRequest(end=pb.RequestEnd(part_count=0)))
            await call.done_writing()

        return header, forward

    async def _multipart(self):
        limits = self.limits
        parser = MultipartParser(
            boundary_from_content_type(self.request.header("content-type")), max_body_size=limits.max_body_bytes,
            max_parts=limits.max_parts, max_part_size=limits.max_part_bytes,
        )
        json_part, leftover = await self._read_json_part(parser)
        header = request_header(json_part, self.route, self.request_id)
        translator = RequestTranslator()

        async def forward(call) -> None:
            for message in translator.translate(leftover):
                await call.write(message)
            while data := await self.read():
                for message in translator.translate(parser.feed(data)):
                    await call.write(message)
            parser.close()
            await call.write(translator.end())
            await call.done_writing()

        return header, forward

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

    async def _admit(self, header: pb.RequestHeader):
        traced = self.trace.call(self.channel.target)  # the call's span; its traceparent goes in the metadata
        try:
            call = await admit(self.channel, pb.InferRequest(header=header), self.limits.deadline_seconds,
                               ((metadata.REQUEST_ID, self.request_id), *traced.metadata),
                               self.limits.queue_wait_seconds)
        except Refused as refused:
            traced.end(refused.status)
            raise self._worker_error(refused.status, refused.details, refused.error_code) from None
        except BaseException:
            traced.end(None)
            raise
        traced.follow(call)
        return call

    async def _exchange(self, call, forward) -> Response:
        forwarder = asyncio.ensure_future(forward(call))
        first = asyncio.ensure_future(call.read())
        for task in (forwarder, first):  # either may end with an error after the exchange gave up on it
            task.add_done_callback(retrieve_outcome)
        try:
            await asyncio.wait((forwarder, first), return_when=asyncio.FIRST_COMPLETED)
            if forwarder.done() and forwarder.exception() is not None:
                failure = forwarder.exception()
                if not isinstance(failure, CALL_ENDED):
                    raise client_error(failure)  # the body is at fault: the call is cancelled below
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
        if message is grpc.aio.EOF:
            forwarder.cancel()
            if call.done() and await call.code() != grpc.StatusCode.OK:
                raise await self._call_error(call)
            call.cancel()
            raise errors.bad_worker_answer(["the worker ended the call without a result"])
        if isinstance(message, wire.Binary) or message.WhichOneof("message") != "result":
            call.cancel()
            raise errors.bad_worker_answer(["the worker's first message is not the result"])
        try:
            layout = plan_answer(message.result)
        except BadWorkerAnswer as error:
            call.cancel()
            raise errors.bad_worker_answer(error.problems) from None
        self.outcome.input_hash = message.result.input_hash
        set_tags(input_hash=message.result.input_hash)
        headers = [("Content-Type", layout.content_type), ("X-Request-Id", self.request_id)]
        body = AnswerBody(call, encode_answer(layout, message.result.input_hash, _binary_chunks(call)))
        return Response(200, headers, body, content_length=layout.content_length())

    async def _call_error(self, call) -> errors.ApiError:
        trailing = await call.trailing_metadata()
        input_hash = metadata.value(trailing, metadata.INPUT_HASH)
        if input_hash:
            self.outcome.input_hash = input_hash
            set_tags(input_hash=input_hash)
        # The worker that admitted the call names itself (its host name): which one failed is in the log.
        worker = metadata.value(await call.initial_metadata(), metadata.WORKER)
        return self._worker_error(await call.code(), await call.details() or "",
                                  metadata.value(trailing, metadata.ERROR_CODE), worker)

    def _worker_error(self, status: grpc.StatusCode, details: str, error_code: str,
                      worker: str = "") -> errors.ApiError:
        on = f" (worker {worker})" if worker else ""  # before admission, gRPC's details name the address tried
        if error_code or status not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            log.info("the worker%s ended the call: %s %s", on, status.name, details)
        else:
            log.warning("worker target %s%s: %s %s", self.channel.target, on, status.name, details)
        return errors.from_worker(status, details, error_code)


async def _binary_chunks(call) -> AsyncIterator:
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        if isinstance(message, wire.Binary):
            yield message
        elif message.WhichOneof("message") == "binary":
            yield message.binary
        else:
            raise BadWorkerAnswer(["a second result message arrived among the binary chunks"])


class AnswerBody:
    """The answer's bytes as they come from the worker's call. Closing it (the client went away, even before
    the first byte) cancels the call at once, so the worker stops sending; after a complete call that is a
    no-op. An async generator would not run its cleanup when closed before it started."""

    def __init__(self, call, encoded: AsyncIterator[bytes]) -> None:
        self._call = call
        self._encoded = encoded

    def __aiter__(self) -> AnswerBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._encoded)
        except StopAsyncIteration:
            self._call.cancel()
            raise
        except (BadWorkerAnswer, grpc.aio.AioRpcError) as error:
            log.error("the answer broke off while streaming: %s", error)
            self._call.cancel()
            raise

    async def aclose(self) -> None:
        self._call.cancel()
        await self._encoded.aclose()

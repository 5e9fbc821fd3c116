"""One inference request: the HTTP body streams to the worker while it arrives, the answer streams back.

The WSGI thread reads the JSON part, then hands the rest of the body to gRPC as a request iterator
(gRPC pulls it from its own thread, so upload and forwarding overlap and memory stays at about one
chunk). The WSGI thread waits for the worker's result header, checks it, and returns a response whose
body is produced from the worker's binary chunks as they come. Nothing here imports a model or decodes
pixels.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

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
from arterys_http.protocol import sha256_hex
from bridge import errors
from bridge.disconnect import DisconnectWatcher
from bridge.translate import (
    JSON_CONTENT_TYPES,
    BadWorkerAnswer,
    InvalidRequest,
    RequestTranslator,
    ResponseEncoder,
    plan_response,
    request_header,
)
from bridge.workers import WorkerPool
from contract import inference_pb2 as pb
from contract.logs import set_tags

log = logging.getLogger("bridge.inference")

READ_SIZE = 1 << 20


@dataclass
class Limits:
    max_body_bytes: int = 4 << 30
    max_parts: int = 20_000
    max_part_bytes: int = 1 << 30
    max_json_bytes: int = 1 << 20
    deadline_seconds: float = 600.0


class ClientGone(Exception):
    """The HTTP client closed the connection."""


class BodyReader:
    """Reads wsgi.input in chunks, counts bytes, and lets the WSGI thread take over (drain) safely."""

    def __init__(self, stream, on_bytes=lambda n: None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._on_bytes = on_bytes
        self.abandoned = False
        self.exhausted = False
        self.total = 0

    def read(self) -> bytes:
        with self._lock:
            if self.abandoned:
                raise ClientGone("the request was abandoned")
            return self._read_locked()

    def _read_locked(self) -> bytes:
        if self.exhausted:
            return b""
        try:
            data = self._stream.read(READ_SIZE)
        except (OSError, ValueError) as error:  # a reset connection, or cheroot's socket closed under us
            raise ClientGone(f"reading the request failed: {error}") from error
        if not data:
            self.exhausted = True
        self.total += len(data)
        self._on_bytes(len(data))
        return data

    def drain(self, limit: int) -> None:
        """Stops forwarding and reads the rest of the body (up to `limit`), so the client can read our answer."""
        with self._lock:
            self.abandoned = True
            try:
                while not self.exhausted and self.total < limit:
                    self._read_locked()
            except ClientGone:
                pass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Iterator[bytes]
    input_hash: str = ""


class InferenceRequest:
    """Runs one request against a worker pool; `run()` returns the answer or raises errors.ApiError."""

    def __init__(self, environ: dict, route: str, pool: WorkerPool, limits: Limits, on_request_bytes) -> None:
        self.environ = environ
        self.route = route
        self.pool = pool
        self.limits = limits
        self.request_id = environ.get("bridge.request_id") or uuid.uuid4().hex[:12]
        self.reader = BodyReader(environ["wsgi.input"], on_request_bytes)
        self._failure: BaseException | None = None  # what went wrong on gRPC's side of the body
        self.input_hash = ""

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> Answer:
        media_type, params = self._content_type()
        self._check_declared_length()
        if media_type == "application/json":
            messages = self._study_path_messages()
        else:
            messages = self._multipart_messages(params)
        call = self.pool.stub.Infer(messages, timeout=self.limits.deadline_seconds,
                                    metadata=(("x-request-id", self.request_id),))
        watcher = DisconnectWatcher(
            self.environ.get("bridge.client_socket"), lambda: self.reader.exhausted, call.cancel
        )
        try:
            with watcher:
                first = next(call)
        except grpc.RpcError as error:
            if watcher.disconnected:
                raise errors.ApiError(499, "client_closed_request", "the client closed the connection") from error
            raise self._failure_error(error) from error
        except StopIteration:
            raise errors.bad_worker_answer(["the worker ended the call without a result"]) from None
        if first.WhichOneof("message") != "result":
            call.cancel()
            raise errors.bad_worker_answer(["the worker's first message is not the result"])
        try:
            plan = plan_response(first.result)
        except BadWorkerAnswer as error:
            call.cancel()
            raise errors.bad_worker_answer(error.problems) from error
        encoder = ResponseEncoder(plan, self.input_hash)
        headers = {
            "Content-Type": plan.content_type,
            "Content-Length": str(plan.content_length()),
            "X-Request-Id": self.request_id,
        }
        return Answer(200, headers, self._stream_body(call, encoder), self.input_hash)

    def _content_type(self) -> tuple[str, dict[str, str]]:
        raw = self.environ.get("CONTENT_TYPE", "")
        try:
            media_type, params = parse_content_type(raw) if raw else ("", {})
        except MultipartError:
            raise errors.unsupported_media_type(raw) from None
        if media_type not in ("multipart/related", "multipart/form-data", "application/json"):
            raise errors.unsupported_media_type(raw)
        return media_type, params

    def _check_declared_length(self) -> None:
        declared = self.environ.get("CONTENT_LENGTH")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise errors.too_large(
                f"the request body is {int(declared)} bytes; this bridge accepts at most {self.limits.max_body_bytes}"
            )

    # ------------------------------------------------------------------------------ request messages

    def _study_path_messages(self) -> Iterator[pb.InferRequest]:
        body = bytearray()
        while chunk := self.reader.read():
            body += chunk
            if len(body) > self.limits.max_json_bytes:
                raise errors.too_large(f"a JSON request may be at most {self.limits.max_json_bytes} bytes")
        body = bytes(body)
        header = self._header(body)
        try:
            study_path = json.loads(body).get("studyPath")
        except (ValueError, AttributeError):
            study_path = None
        if not isinstance(study_path, str) or not study_path:
            raise errors.bad_request(
                "an application/json request must name a studyPath (a folder of DICOM files the worker can read); "
                "to send the DICOM files themselves use multipart/related"
            )
        header.study_path = study_path
        self.input_hash = sha256_hex([body])
        set_tags(input_hash=self.input_hash)
        return iter([pb.InferRequest(header=header),
                     pb.InferRequest(end=pb.RequestEnd(input_hash=self.input_hash, part_count=0))])

    def _header(self, json_part: bytes) -> pb.RequestHeader:
        try:
            return request_header(json_part, self.route, self.request_id)
        except InvalidRequest as error:
            raise errors.bad_request(str(error)) from error

    def _multipart_messages(self, params: dict[str, str]) -> Iterator[pb.InferRequest]:
        try:
            parser = MultipartParser(
                boundary_from_content_type(self.environ.get("CONTENT_TYPE", "")),
                max_body_size=self.limits.max_body_bytes,
                max_parts=self.limits.max_parts,
                max_part_size=self.limits.max_part_bytes,
            )
            json_part, leftover = self._read_json_part(parser)
        except LimitExceeded as error:
            raise errors.too_large(str(error)) from error
        except MultipartError as error:
            raise errors.bad_request(f"malformed multipart body: {error}") from error
        translator = RequestTranslator(json_part)
        return self._forward(parser, translator, leftover)

    def _read_json_part(self, parser: MultipartParser) -> tuple[bytes, list]:
        """Reads up to the end of the first part (the request JSON); returns it and the events after it."""
        json_part = bytearray()
        started = False
        while True:
            data = self.reader.read()
            events = parser.feed(data) if data else parser.close()
            for position, event in enumerate(events):
                if isinstance(event, PartStart):
                    if event.content_type not in JSON_CONTENT_TYPES:
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

    def _forward(self, parser: MultipartParser, translator: RequestTranslator, leftover: list):
        header = self._header(translator.json_part)

        def messages() -> Iterator[pb.InferRequest]:
            try:
                yield pb.InferRequest(header=header)
                yield from translator.translate(leftover)
                while data := self.reader.read():
                    yield from translator.translate(parser.feed(data))
                yield from translator.translate(parser.close())
                end = translator.end()
                self.input_hash = translator.input_hash
                yield end
            except BaseException as error:  # noqa: BLE001 - kept for the WSGI thread, which answers
                self._failure = error
                raise

        return messages()

    def _failure_error(self, error: grpc.RpcError) -> errors.ApiError:
        """The answer for a failed call: our own reading failure wins over the cancellation it caused."""
        failure = self._failure
        if isinstance(failure, LimitExceeded):
            return errors.too_large(str(failure))
        if isinstance(failure, MultipartError):
            return errors.bad_request(f"malformed multipart body: {failure}")
        if isinstance(failure, errors.ApiError):
            return failure
        if isinstance(failure, ClientGone):
            return errors.ApiError(499, "client_closed_request", str(failure))
        if not self.reader.exhausted:
            # The worker answered before the upload ended (busy, unknown command): read the rest so
            # that the client, still sending, gets to read the answer.
            self.reader.drain(self.limits.max_body_bytes)
        return errors.from_grpc(error)

    # ---------------------------------------------------------------------------------- response body

    def _stream_body(self, call, encoder: ResponseEncoder) -> Iterator[bytes]:
        def chunks():
            for response in call:
                if response.WhichOneof("message") != "binary":
                    raise BadWorkerAnswer(["a second result message arrived among the binary chunks"])
                yield response.binary

        try:
            yield from encoder.encode(chunks())
        except (BadWorkerAnswer, grpc.RpcError) as error:
            # Status and Content-Length are already sent: dropping the connection short of
            # Content-Length is the only honest signal left, and the server does it when we raise.
            log.error("the answer broke off while streaming: %s", error)
            raise
        finally:
            call.cancel()  # a no-op after a complete call; stops the worker when the client went away

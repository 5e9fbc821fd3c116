"""Translation between the Arterys HTTP protocol and the worker contract, both ways, with no IO.

Inbound: multipart events become `InferRequest` messages (header from the JSON part, then one `part`
plus `chunk`s per later part, then `end` with the input hash). Outbound: the worker's `InferResult`
becomes the multipart/related response: JSON part, one binary part per entry of `parts`, hashes last.
Hashes follow PROTOCOL.md and are computed on the bytes as they stream past.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from arterys_http.multipart import Epilogue, MultipartError, PartData, PartEnd, PartStart
from arterys_http.protocol import DICOM_TYPES, check_result, hashes_line
from contract import inference_pb2 as pb
from contract.result_json import binary_type_name, encode_result, from_proto

DICOM_CONTENT_TYPE = "application/dicom"
JSON_CONTENT_TYPES = ("application/json", "text/json", "")
CHUNK_SIZE = 1 << 20  # messages of about 1 MiB keep gRPC Python's per-message cost low (DESIGN.md)


class InvalidRequest(ValueError):
    """The request breaks the Arterys protocol (answered 400 with this message)."""


class BadWorkerAnswer(Exception):
    """The worker's answer breaks the protocol (answered 502, never a malformed 200)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the worker's answer breaks the Arterys protocol: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------- inbound


def request_header(json_part: bytes, route: str, request_id: str, study_path: str = "") -> pb.RequestHeader:
    """The header message for the request's JSON part (checked to be a JSON object)."""
    try:
        value = json.loads(json_part) if json_part.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"the first part must be the request JSON, but it is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidRequest(f"the request JSON must be an object, got {type(value).__name__}")
    command = value.get("inference_command", "")
    if not isinstance(command, str):
        raise InvalidRequest(f"inference_command must be a string, got {command!r}")
    return pb.RequestHeader(
        request_json=json_part, inference_command=command, study_path=study_path, request_id=request_id, route=route
    )


def part_kind(content_type: str) -> int:
    """DICOM instances are the parts sent as application/dicom; every other part is an attachment."""
    return pb.PART_KIND_DICOM if content_type == DICOM_CONTENT_TYPE else pb.PART_KIND_ATTACHMENT


@dataclass
class RequestTranslator:
    """Turns the multipart events after the JSON part into request messages, hashing as it goes.

    Feed it the events of the parser in order; `messages()` yields what to send. `input_hash` is the
    hash of every part's content in order; seed it with the JSON part.
    """

    json_part: bytes
    chunk_size: int = CHUNK_SIZE
    part_count: int = 0
    _digest: hashlib._Hash = field(init=False, repr=False)
    _pending: bytearray = field(default_factory=bytearray, repr=False)
    finished: bool = False

    def __post_init__(self) -> None:
        self._digest = hashlib.sha256(self.json_part)

    @property
    def input_hash(self) -> str:
        return self._digest.hexdigest()

    def translate(self, events: Iterable) -> Iterator[pb.InferRequest]:
        for event in events:
            if isinstance(event, PartStart):
                self.part_count += 1
                yield pb.InferRequest(part=pb.PartHeader(
                    kind=part_kind(event.content_type), content_type=event.content_type,
                    filename=event.filename, name=event.name,
                ))
            elif isinstance(event, PartData):
                self._digest.update(event.data)
                # Coalesce small reads into ~1 MiB messages; pass big ones through without copying.
                if not self._pending and len(event.data) >= self.chunk_size:
                    yield pb.InferRequest(chunk=event.data)
                    continue
                self._pending += event.data
                if len(self._pending) >= self.chunk_size:
                    yield from self._flush()
            elif isinstance(event, PartEnd):
                yield from self._flush()
            elif isinstance(event, Epilogue):
                self.finished = True

    def _flush(self) -> Iterator[pb.InferRequest]:
        if self._pending:
            yield pb.InferRequest(chunk=bytes(self._pending))
            self._pending.clear()

    def end(self) -> pb.InferRequest:
        if not self.finished:
            raise MultipartError("the request body ended before the closing boundary")
        return pb.InferRequest(end=pb.RequestEnd(input_hash=self.input_hash, part_count=self.part_count))


# -------------------------------------------------------------------------------------------- outbound


def new_boundary() -> str:
    # 128 random bits: the chance that it occurs inside a mask is negligible.
    return "arterys-" + secrets.token_hex(16)


def binary_content_type(part: pb.Part) -> str:
    return "application/dicom" if binary_type_name(part) in DICOM_TYPES else "application/binary"


def part_head(boundary: str, content_type: str, first: bool = False) -> bytes:
    return (b"" if first else b"\r\n") + f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


HASHES_LENGTH = 64 + 1 + 64


@dataclass
class ResponsePlan:
    """Everything known about the response once the worker's result header has arrived."""

    boundary: str
    result_json: dict
    json_bytes: bytes
    sizes: list[int]
    content_types: list[str]

    @property
    def content_type(self) -> str:
        return f"multipart/related; boundary={self.boundary}"

    def content_length(self) -> int:
        """Exact body length: declared sizes make it known before any mask byte arrives, so a worker
        that under-delivers leaves a response the client sees as truncated, never a shorter 200."""
        length = len(part_head(self.boundary, "application/json", first=True)) + len(self.json_bytes)
        for size, content_type in zip(self.sizes, self.content_types, strict=True):
            length += len(part_head(self.boundary, content_type)) + size
        length += len(part_head(self.boundary, "text/plain")) + HASHES_LENGTH + len(closing(self.boundary))
        return length


def plan_response(result: pb.InferResult) -> ResponsePlan:
    """Checks the worker's result header against the protocol and plans the response; raises BadWorkerAnswer."""
    result_json = from_proto(result)
    sizes = [part.binary_size for part in result.parts]
    problems = check_result(result_json, sizes)
    if problems:
        raise BadWorkerAnswer(problems)
    return ResponsePlan(
        boundary=new_boundary(),
        result_json=result_json,
        json_bytes=encode_result(result_json),
        sizes=sizes,
        content_types=[binary_content_type(p) for p in result.parts],
    )


class ResponseEncoder:
    """Streams the multipart response for a plan from the worker's binary chunks, checking them.

    Chunks must come in part order and add up to each part's declared size; anything else raises
    BadWorkerAnswer mid-stream (the server then drops the connection short of Content-Length).
    """

    def __init__(self, plan: ResponsePlan, input_hash: str) -> None:
        self.plan = plan
        self.input_hash = input_hash
        self._digest = hashlib.sha256()

    def encode(self, chunks: Iterable[pb.BinaryChunk]) -> Iterator[bytes]:
        plan = self.plan
        yield part_head(plan.boundary, "application/json", first=True)
        self._digest.update(plan.json_bytes)
        yield plan.json_bytes
        current, received = -1, 0
        for chunk in chunks:
            while current < chunk.part_index:
                if current >= 0 and received != plan.sizes[current]:
                    raise BadWorkerAnswer([f"parts[{current}]: {received} bytes sent, {plan.sizes[current]} declared"])
                current, received = current + 1, 0
                if current >= len(plan.sizes):
                    raise BadWorkerAnswer([f"binary chunk for parts[{chunk.part_index}], which does not exist"])
                yield part_head(plan.boundary, plan.content_types[current])
            if chunk.part_index != current:
                raise BadWorkerAnswer([f"binary chunks out of order: parts[{chunk.part_index}] after parts[{current}]"])
            received += len(chunk.data)
            if received > plan.sizes[current]:
                raise BadWorkerAnswer([f"parts[{current}]: more bytes sent than the {plan.sizes[current]} declared"])
            self._digest.update(chunk.data)
            yield chunk.data
        while current < len(plan.sizes):
            if current >= 0 and received != plan.sizes[current]:
                raise BadWorkerAnswer([f"parts[{current}]: {received} bytes sent, {plan.sizes[current]} declared"])
            current, received = current + 1, 0
            if current < len(plan.sizes):
                yield part_head(plan.boundary, plan.content_types[current])
        yield part_head(plan.boundary, "text/plain")
        yield hashes_line(self.input_hash, self._digest.hexdigest()).encode()
        yield closing(plan.boundary)

"""Translation between the Arterys HTTP protocol and the worker contract, both ways, with no IO.

Inbound: multipart events become `InferRequest` messages (header from the JSON part, then one `part` plus
`chunk`s per later part, then `end`); the bridge sends those at hand together (contract.wire bundles).
Outbound: the worker's `InferResult` becomes the multipart/related answer: JSON part, one binary part per
entry of `parts`, hashes last. The input hash is the worker's (it hashes what it received, once); the output
hash is computed here, on the bytes as they stream past.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from arterys_http import media
from arterys_http.json_text import JsonProblem, load_json_object
from arterys_http.multipart import Epilogue, MultipartError, PartData, PartEnd, PartStart
from arterys_http.protocol import check_result, hashes_line
from arterys_http.writer import AnswerLayout, new_boundary
from contract import inference_pb2 as pb
from contract import limits, wire
from contract.result_json import binary_type_name, encode_result, from_proto

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class InvalidRequest(ValueError):
    """The request breaks the Arterys protocol (answered 400 with this message)."""


class BadWorkerAnswer(Exception):
    """The worker's answer breaks the protocol (answered 502, never a malformed 200)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# --------------------------------------------------------------------------------------------- inbound


def parse_json_object(raw: bytes, what: str) -> dict:
    """`raw` as a JSON object, or InvalidRequest saying why not (deep nesting and huge integers included)."""
    try:
        return load_json_object(raw, what)
    except JsonProblem as problem:
        raise InvalidRequest(str(problem)) from None


def request_header(json_part: bytes, route: str, request_id: str, study_path: str = "") -> pb.RequestHeader:
    """The header message for the request's JSON part (checked to be a JSON object)."""
    value = parse_json_object(json_part, "the request JSON (the first part)")
    command = value.get("inference_command", "")
    if not isinstance(command, str):
        raise InvalidRequest(f"inference_command must be a string, got {type(command).__name__}")
    if len(command) > limits.MAX_COMMAND_LENGTH:
        raise InvalidRequest(f"inference_command is {len(command)} characters long; at most "
                             f"{limits.MAX_COMMAND_LENGTH} are accepted")
    return pb.RequestHeader(
        request_json=json_part, inference_command=command, study_path=study_path, request_id=request_id, route=route
    )


def part_kind(content_type: str) -> int:
    """DICOM instances are the parts sent as application/dicom; every other part is an attachment."""
    return pb.PART_KIND_DICOM if content_type == media.DICOM else pb.PART_KIND_ATTACHMENT


@dataclass
class RequestTranslator:
    """Turns the multipart events after the JSON part into request messages.

    Feed it the parser's events in order; it yields what to send: `InferRequest`s, and part data coalesced
    into chunks of about `chunk_size` bytes (`wire.Chunk`, joined only as they are serialised).
    """

    chunk_size: int = limits.CHUNK_BYTES
    part_count: int = 0
    finished: bool = False
    _pending: list = field(default_factory=list, repr=False)
    _pending_size: int = 0

    def translate(self, events: Iterable) -> Iterator[pb.InferRequest | wire.Chunk]:
        for event in events:
            if isinstance(event, PartData):
                data = event.data
                if not self._pending and len(data) >= self.chunk_size:
                    yield wire.Chunk((data,))
                    continue
                self._pending.append(data)
                self._pending_size += len(data)
                if self._pending_size >= self.chunk_size:
                    yield self._flush()
            elif isinstance(event, PartStart):
                self.part_count += 1
                yield pb.InferRequest(part=pb.PartHeader(
                    kind=part_kind(event.content_type), content_type=event.content_type,
                    filename=event.filename, name=event.name,
                ))
            elif isinstance(event, PartEnd):
                if self._pending:
                    yield self._flush()
            elif isinstance(event, Epilogue):
                self.finished = True

    def _flush(self) -> wire.Chunk:
        chunk = wire.Chunk(self._pending)
        self._pending, self._pending_size = [], 0
        return chunk

    def end(self) -> pb.InferRequest:
        if not self.finished:
            raise MultipartError("the request body ended before the closing boundary")
        return pb.InferRequest(end=pb.RequestEnd(part_count=self.part_count))


# -------------------------------------------------------------------------------------------- outbound


def plan_answer(result: pb.InferResult) -> AnswerLayout:
    """Checks the worker's result header against the protocol and lays out the answer; raises BadWorkerAnswer."""
    result_json = from_proto(result)
    sizes = [part.binary_size for part in result.parts]
    problems = check_result(result_json, sizes)
    if not SHA256_HEX.fullmatch(result.input_hash):
        problems.append(f"the worker's input hash {result.input_hash[:80]!r} is not 64 hex digits")
    if problems:
        raise BadWorkerAnswer(problems)
    return AnswerLayout(
        boundary=new_boundary(),
        json_bytes=encode_result(result_json),
        sizes=sizes,
        content_types=[media.binary_content_type(binary_type_name(p)) for p in result.parts],
    )


async def encode_answer(layout: AnswerLayout, input_hash: str, chunks: AsyncIterator) -> AsyncIterator[bytes]:
    """Streams the multipart answer from the worker's binary chunks (anything with `part_index` and `data`:
    contract.wire.Binary or BinaryChunk), checking them as they pass.

    Chunks must come in part order and add up to each part's declared size; anything else raises
    BadWorkerAnswer mid-stream (the server then drops the connection short of Content-Length).
    """
    digest = hashlib.sha256(layout.json_bytes)
    yield layout.head_of_json() + layout.json_bytes
    sizes = layout.sizes
    current, received = -1, 0
    async for chunk in chunks:
        index, data = chunk.part_index, chunk.data
        while current < index:
            if current >= 0 and received != sizes[current]:
                raise BadWorkerAnswer([f"parts[{current}]: {received} bytes sent, {sizes[current]} declared"])
            current, received = current + 1, 0
            if current >= len(sizes):
                raise BadWorkerAnswer([f"binary chunk for parts[{index}], which does not exist"])
            yield layout.head_of_part(current)
        if index != current:
            raise BadWorkerAnswer([f"binary chunks out of order: parts[{index}] after parts[{current}]"])
        received += len(data)
        if received > sizes[current]:
            raise BadWorkerAnswer([f"parts[{current}]: more bytes sent than the {sizes[current]} declared"])
        digest.update(data)
        yield data
    while current < len(sizes):
        if current >= 0 and received != sizes[current]:
            raise BadWorkerAnswer([f"parts[{current}]: {received} bytes sent, {sizes[current]} declared"])
        current, received = current + 1, 0
        if current < len(sizes):
            yield layout.head_of_part(current)
    yield layout.head_of_hashes() + hashes_line(input_hash, digest.hexdigest()).encode() + layout.end()

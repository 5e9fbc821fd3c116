"""The protobuf encoding of the two messages that carry bulk bytes, written and read without copying them.

A study travels as `InferRequest{chunk}` messages and an answer's masks as `InferResponse{binary}`; through
the generated classes every such message is copied three times on each side (into the message, into its
serialisation, out of the parsed message), which measured as a third of the bridge's and the worker's
CPU on a 134 MB study (BENCHMARKS.md). Here the sender frames the bytes in the one join that coalesces
them, and the receiver gets a memoryview into the buffer gRPC handed over.

The bytes are exactly what the generated classes write (tests compare them), so either side may use the
generated classes instead. Everything else goes through protobuf, and so does any message that is not in
the one exact shape read here: the fast path never guesses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contract import inference_pb2 as pb

# Field tags (field number << 3 | wire type 2, length-delimited; wire type 0, varint).
REQUEST_CHUNK = 0x1A  # InferRequest.chunk = 3
RESPONSE_BINARY = 0x12  # InferResponse.binary = 2
BINARY_PART_INDEX = 0x08  # BinaryChunk.part_index = 1
BINARY_DATA = 0x12  # BinaryChunk.data = 2

INFER_METHOD = "/" + pb.DESCRIPTOR.services_by_name["Inference"].full_name + "/Infer"


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(raw, offset: int) -> tuple[int, int]:
    """(value, offset after it); raises IndexError or ValueError on a truncated or overlong varint."""
    value = shift = 0
    while True:
        byte = raw[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


# --------------------------------------------------------------------------------------------- request


def request_chunk(pieces: Sequence) -> bytes:
    """The serialised `InferRequest{chunk: pieces joined}`, built with a single copy of the pieces."""
    size = sum(len(piece) for piece in pieces)
    return b"".join((bytes((REQUEST_CHUNK,)), varint(size), *pieces))


def serialize_request(message) -> bytes:
    """gRPC request serializer: pre-serialised bytes pass as they are, messages through protobuf."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def parse_request(raw: bytes):
    """gRPC request deserializer: a memoryview for a chunk message, else an `InferRequest`."""
    if raw[:1] == b"\x1a":
        try:
            size, offset = _read_varint(raw, 1)
        except (IndexError, ValueError):
            pass
        else:
            if offset + size == len(raw):
                return memoryview(raw)[offset:]
    return pb.InferRequest.FromString(raw)


# -------------------------------------------------------------------------------------------- response


@dataclass(frozen=True)
class Binary:
    """An answer's bytes for `parts[part_index]`, as a view of what gRPC received (the BinaryChunk)."""

    part_index: int
    data: memoryview


def response_binary(part_index: int, data) -> bytes:
    """The serialised `InferResponse{binary: {part_index, data}}`, with one copy of `data`. Like the generated
    classes, fields at their default (index 0, empty data) are left out."""
    index = bytes((BINARY_PART_INDEX,)) + varint(part_index) if part_index else b""
    data_head = bytes((BINARY_DATA,)) + varint(len(data)) if len(data) else b""
    inner = len(index) + len(data_head) + len(data)
    return b"".join((bytes((RESPONSE_BINARY,)), varint(inner), index, data_head, data))


def serialize_response(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def parse_response(raw: bytes):
    """gRPC response deserializer: a `Binary` for a binary chunk in the generated classes' exact layout,
    else an `InferResponse`."""
    if raw[:1] == b"\x12":
        try:
            inner, offset = _read_varint(raw, 1)
            if offset + inner == len(raw):
                index = 0
                if raw[offset] == BINARY_PART_INDEX:
                    index, offset = _read_varint(raw, offset + 1)
                if raw[offset] == BINARY_DATA:
                    size, offset = _read_varint(raw, offset + 1)
                    if size and offset + size == len(raw):
                        return Binary(index, memoryview(raw)[offset:])
        except (IndexError, ValueError):
            pass
    return pb.InferResponse.FromString(raw)

"""The protobuf encoding of the two messages that carry bulk bytes, written and read without copying them.

A study travels as `InferRequest{chunk}` messages and an answer's masks as `InferResponse{binary}`; through
the generated classes every such message is copied three times on each side (into the message, into its
serialisation, out of the parsed message), which measured as a third of the bridge's and the worker's
CPU on a 134 MB study (BENCHMARKS.md). Here the sender frames the bytes in the one join that coalesces
them, and the receiver gets a memoryview into the buffer gRPC handed over.

Several request messages may travel as one `InferRequest{bundle}` (fewer gRPC messages: each costs both
ends a round of work in gRPC Python); a bundle is framed here in the same single join, and read back into
its messages, chunks again as views.

The bytes are exactly what the generated classes write (tests compare them), so either side may use the
generated classes instead. Everything else goes through protobuf, and so does any message that is not in
the one exact shape read here: the fast path never guesses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from contract import inference_pb2 as pb
from contract.limits import BUNDLE_MESSAGES, MESSAGE_OBJECT_BYTES

# Field tags (field number << 3 | wire type 2, length-delimited; wire type 0, varint).
REQUEST_CHUNK = 0x1A  # InferRequest.chunk = 3
REQUEST_BUNDLE = 0x2A  # InferRequest.bundle = 5
BUNDLE_MESSAGE = 0x0A  # RequestBundle.messages = 1, ResponseBundle.messages = 1
RESPONSE_BUNDLE = 0x1A  # InferResponse.bundle = 3
RESPONSE_BINARY = 0x12  # InferResponse.binary = 2
BINARY_PART_INDEX = 0x08  # BinaryChunk.part_index = 1
BINARY_DATA = 0x12  # BinaryChunk.data = 2

INFER_METHOD = "/" + pb.DESCRIPTOR.services_by_name["Inference"].full_name + "/Infer"
INFER_WHOLE_METHOD = INFER_METHOD + "Whole"


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


class Chunk(list):
    """An `InferRequest{chunk}` not serialised yet: its pieces, joined only when the message is (request_chunk,
    request_message), so that a chunk inside a bundle is copied once too."""

    @property
    def size(self) -> int:
        return sum(len(piece) for piece in self)


def _chunk_frame(chunk: Chunk) -> list:
    return [bytes((REQUEST_CHUNK,)), varint(chunk.size), *chunk]


def request_chunk(pieces: Sequence) -> bytes:
    """The serialised `InferRequest{chunk: pieces joined}`, built with a single copy of the pieces."""
    return b"".join(_chunk_frame(Chunk(pieces)))


def request_message(messages: Sequence) -> bytes:
    """One serialised `InferRequest` carrying `messages` (each an `InferRequest` or a `Chunk`), in one copy of
    the chunks' pieces: the message itself when there is one, else `InferRequest{bundle: {messages}}`."""
    return _message_or_bundle(REQUEST_BUNDLE, [_chunk_frame(m) if isinstance(m, Chunk) else [m.SerializeToString()]
                                               for m in messages])


def _message_or_bundle(bundle_tag: int, frames: list[list]) -> bytes:
    """The one message whose pieces are `frames[0]`, or the bundle (field `bundle_tag`) of all of them; one join."""
    if len(frames) == 1:
        return b"".join(frames[0])
    pieces: list = []
    for frame in frames:
        pieces += (bytes((BUNDLE_MESSAGE,)), varint(sum(len(piece) for piece in frame)), *frame)
    return b"".join((bytes((bundle_tag,)), varint(sum(len(piece) for piece in pieces)), *pieces))


class Refused(ValueError):
    """A message the contract refuses, as `unbundle` finds it; its message says why, for the sender."""


class BadBundle(Refused):
    """A bundle the contract forbids."""


class NestedBundle(BadBundle):
    """A bundle holds another bundle."""


class OverfullBundle(BadBundle):
    """A bundle holds more than BUNDLE_MESSAGES messages."""


class Unreadable(Refused):
    """A request message that is not a valid InferRequest at all (protobuf could not read it)."""


OVERFULL = f"a bundle holds more than {BUNDLE_MESSAGES} messages; start another bundle"


class _Refusal:
    """What a deserializer returns instead of raising `error` (gRPC would end the call with its own status and
    log its own traceback); `unbundle` raises it."""

    def __init__(self, error: Refused) -> None:
        self.error = error


def unbundle(message) -> Iterator:
    """The messages one gRPC message carries, in order: itself, or its bundle's (as read here, a list, or as
    protobuf read it). Each is taken out of the bundle as it is handed on: gRPC keeps the last message it read
    until the call's objects are garbage-collected, and would keep a bundle's chunks with it (a worker serving
    small studies at 8 clients: 90 -> 150 MB). Raises NestedBundle for a bundle inside a bundle, OverfullBundle
    for one of more than BUNDLE_MESSAGES, and what the deserializer refused (a Refused)."""
    if type(message) is list:
        inner = message
    elif type(message) is _Refusal:
        raise message.error
    elif not isinstance(message, (memoryview, Binary)) and message.WhichOneof("message") == "bundle":
        if len(message.bundle.messages) > BUNDLE_MESSAGES:
            raise OverfullBundle(OVERFULL)
        inner = list(message.bundle.messages)
        message.ClearField("bundle")
    else:
        yield message
        return
    inner.reverse()
    while inner:
        each = inner.pop()
        if not isinstance(each, (memoryview, Binary)) and each.WhichOneof("message") == "bundle":
            raise NestedBundle("a bundle holds another bundle")
        yield each


def serialize_request(message) -> bytes:
    """gRPC request serializer: pre-serialised bytes pass as they are, messages through protobuf."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def parse_request(raw: bytes):
    """gRPC request deserializer: a memoryview for a chunk message, a list of the messages of a bundle (each a
    memoryview or an `InferRequest`), else an `InferRequest` (a bundle not in the exact layout read here too).
    A list, so that its reader can take the messages out of it (`unbundle`), which also raises for what could
    not be read."""
    try:
        return _parse(raw, REQUEST_BUNDLE, _request_at)
    except DecodeError as error:
        reason = (str(error) or "protobuf could not decode it")[:200]
        return _Refusal(Unreadable(f"a request message is not a valid InferRequest ({reason})"))


def held_bytes(request) -> int:
    """The memory a request message as `parse_request` read it keeps: each inner message's bytes (part headers
    included: their names are as long as the sender makes them) and the object each is read into
    (MESSAGE_OBJECT_BYTES); a refused message, nothing. Pure."""
    if type(request) is list:
        return sum((len(m) if type(m) is memoryview else m.ByteSize()) + MESSAGE_OBJECT_BYTES for m in request)
    if type(request) is memoryview:
        return len(request)
    if isinstance(request, pb.InferRequest):
        return request.ByteSize() + len(request.bundle.messages) * MESSAGE_OBJECT_BYTES
    return 0


def _parse(raw: bytes, bundle_tag: int, read_message):
    if raw[:1] == bytes((bundle_tag,)):
        messages = _bundle_messages(raw, read_message)
        if messages is not None:
            return messages
    return read_message(raw, 0, len(raw))


def bundles_of(messages: Sequence) -> Iterator[Sequence]:
    """`messages` in consecutive groups of at most BUNDLE_MESSAGES, for a sender to bundle each. Pure."""
    for start in range(0, len(messages), BUNDLE_MESSAGES):
        yield messages[start:start + BUNDLE_MESSAGES]


def _chunk_view(raw: bytes, start: int, end: int) -> memoryview | None:
    """The data of the chunk message serialised in raw[start:end], or None if it is not exactly one."""
    try:
        size, offset = _read_varint(raw, start + 1)
    except (IndexError, ValueError):
        return None
    return memoryview(raw)[offset:end] if offset + size == end else None


def _bundle_messages(raw: bytes, read_message) -> list | _Refusal | None:
    """The messages of the bundle serialised in `raw`, each read by `read_message(raw, start, end)`, or None
    unless `raw` is exactly one bundle of length-delimited messages; a refusal (read no further) past
    BUNDLE_MESSAGES."""
    try:
        size, offset = _read_varint(raw, 1)
        if offset + size != len(raw):
            return None
        messages = []
        while offset < len(raw):
            if len(messages) == BUNDLE_MESSAGES:
                return _Refusal(OverfullBundle(OVERFULL))
            if raw[offset] != BUNDLE_MESSAGE:
                return None
            size, offset = _read_varint(raw, offset + 1)
            end = offset + size
            if end > len(raw):
                return None
            messages.append(read_message(raw, offset, end))
            offset = end
    except (IndexError, ValueError):
        return None
    return messages


def _request_at(raw: bytes, start: int, end: int):
    view = _chunk_view(raw, start, end) if raw[start:start + 1] == b"\x1a" else None
    return view if view is not None else pb.InferRequest.FromString(memoryview(raw)[start:end])


# -------------------------------------------------------------------------------------------- response


@dataclass(frozen=True)
class Binary:
    """An answer's bytes for `parts[part_index]`, as a view of what gRPC received (the BinaryChunk)."""

    part_index: int
    data: memoryview


def _binary_frame(part_index: int, data) -> list:
    # Like the generated classes, fields at their default (index 0, empty data) are left out.
    index = bytes((BINARY_PART_INDEX,)) + varint(part_index) if part_index else b""
    data_head = bytes((BINARY_DATA,)) + varint(len(data)) if len(data) else b""
    return [bytes((RESPONSE_BINARY,)), varint(len(index) + len(data_head) + len(data)), index, data_head, data]


def response_binary(part_index: int, data) -> bytes:
    """The serialised `InferResponse{binary: {part_index, data}}`, with one copy of `data`."""
    return b"".join(_binary_frame(part_index, data))


def response_binaries(pieces: Sequence[tuple[int, object]]) -> bytes:
    """One serialised `InferResponse` carrying the binary chunks `pieces` ((part_index, data) each), with one
    copy of the data: the chunk itself when there is one, else `InferResponse{bundle: {messages}}`."""
    return _message_or_bundle(RESPONSE_BUNDLE, [_binary_frame(index, data) for index, data in pieces])


def serialize_response(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def parse_response(raw: bytes):
    """gRPC response deserializer: a `Binary` for a binary chunk in the generated classes' exact layout, a list
    of the messages of a bundle (each a `Binary` or an `InferResponse`), else an `InferResponse`."""
    return _parse(raw, RESPONSE_BUNDLE, _response_at)


def _binary_at(raw: bytes, start: int, end: int) -> Binary | None:
    """The binary chunk serialised in raw[start:end] (its data a view), or None if it is not exactly one in the
    generated classes' layout."""
    try:
        inner, offset = _read_varint(raw, start + 1)
        if offset + inner != end:
            return None
        index = 0
        if raw[offset] == BINARY_PART_INDEX:
            index, offset = _read_varint(raw, offset + 1)
        if raw[offset] == BINARY_DATA:
            size, offset = _read_varint(raw, offset + 1)
            if size and offset + size == end:
                return Binary(index, memoryview(raw)[offset:end])
    except (IndexError, ValueError):
        pass
    return None


def _response_at(raw: bytes, start: int, end: int):
    binary = _binary_at(raw, start, end) if raw[start:start + 1] == b"\x12" else None
    return binary if binary is not None else pb.InferResponse.FromString(memoryview(raw)[start:end])

"""A plain gRPC client for worker tests: sends parts as the contract says, collects the answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import grpc

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from contract.result_json import from_proto

LIMIT = 64 << 20
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)]


@dataclass
class Answer:
    result: pb.InferResult
    json: dict
    binaries: list[bytes]


def request_messages(request: dict | bytes, parts: list[tuple[int, str, bytes]], chunk: int = 1 << 20,
                     study_path: str = "", input_hash: str | None = None):
    """parts: (PartKind, content_type, bytes). Yields header, part/chunk..., end (hash as docs/protocol.md)."""
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    command = json.loads(raw or b"{}").get("inference_command", "") if raw else ""
    yield pb.InferRequest(header=pb.RequestHeader(request_json=raw, inference_command=command,
                                                  study_path=study_path, request_id="test"))
    digest = hashlib.sha256(raw)
    for index, (kind, content_type, data) in enumerate(parts):
        yield pb.InferRequest(part=pb.PartHeader(kind=kind, content_type=content_type, filename=f"{index}.bin"))
        for start in range(0, len(data), chunk):
            digest.update(data[start : start + chunk])
            yield pb.InferRequest(chunk=data[start : start + chunk])
    yield pb.InferRequest(end=pb.RequestEnd(input_hash=digest.hexdigest() if input_hash is None else input_hash,
                                            part_count=len(parts)))


def dicom_parts(paths: list[Path]) -> list[tuple[int, str, bytes]]:
    return [(pb.PART_KIND_DICOM, "application/dicom", Path(p).read_bytes()) for p in paths]


def collect(responses) -> Answer:
    result, binaries = None, []
    for response in responses:
        if response.WhichOneof("message") == "result":
            result = response.result
            binaries = [bytearray() for _ in result.parts]
        else:
            binaries[response.binary.part_index] += response.binary.data
    return Answer(result, from_proto(result), [bytes(b) for b in binaries])


def stub_for(port: int) -> pb_grpc.InferenceStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    return pb_grpc.InferenceStub(channel)


def infer(stub, request, parts, timeout: float = 60, **kwargs) -> Answer:
    return collect(stub.Infer(request_messages(request, parts, **kwargs), timeout=timeout))

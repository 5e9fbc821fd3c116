"""Receives a study from the request stream, part by part, into files; or reads a studyPath folder.

Parts are written to a per-call temporary folder as their chunks arrive, and hashed on the way, so
memory stays at one chunk whatever the study size. Stream-order mistakes are the sender's: they raise
`StreamError`, which the servicer answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contract import inference_pb2 as pb
from worker.api import InvalidInput
from worker.study import Attachment, Instance


class StreamError(InvalidInput):
    """The request stream does not follow the contract's order."""


class HashMismatch(Exception):
    """The received bytes do not hash to what the sender computed (DATA_LOSS)."""


class StudyPathRefused(Exception):
    """studyPath lies outside the study root, or studyPath requests are not enabled (PERMISSION_DENIED)."""


class StudyPathNotFound(Exception):
    """studyPath names no folder, or a folder without DICOM files (NOT_FOUND)."""


@dataclass
class ReceivedParts:
    attachments: list[Attachment] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    input_hash: str = ""
    total_bytes: int = 0


def receive_parts(
    messages: Iterator[pb.InferRequest],
    request_json: bytes,
    folder: Path,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> ReceivedParts:
    """Consumes `part`/`chunk` messages up to `end`; writes each part to `folder`; checks the hash."""
    digest = hashlib.sha256(request_json)
    received = ReceivedParts()
    headers: list[tuple[pb.PartHeader, Path]] = []
    handle = None
    try:
        for message in messages:
            kind = message.WhichOneof("message")
            if kind == "part":
                if handle is not None:
                    handle.close()
                path = folder / f"part-{len(headers):06d}"
                handle = open(path, "wb")
                headers.append((message.part, path))
            elif kind == "chunk":
                if handle is None:
                    raise StreamError("a chunk arrived before any part header")
                handle.write(message.chunk)
                digest.update(message.chunk)
                received.total_bytes += len(message.chunk)
                on_bytes(len(message.chunk))
            elif kind == "end":
                if handle is not None:
                    handle.close()
                    handle = None
                _check_end(message.end, len(headers), digest.hexdigest())
                received.input_hash = digest.hexdigest()
                break
            else:
                raise StreamError(f"unexpected {kind or 'empty'} message inside the request stream")
        else:
            raise StreamError("the request stream ended without an end message")
    finally:
        if handle is not None:
            handle.close()

    for index, (header, path) in enumerate(headers):
        meta = dict(content_type=header.content_type, filename=header.filename, name=header.name)
        if header.kind == pb.PART_KIND_DICOM:
            received.instances.append(Instance.parse(index, path, **meta))
        else:
            received.attachments.append(Attachment(index, path, **meta))
    return received


def _check_end(end: pb.RequestEnd, part_count: int, digest: str) -> None:
    if end.part_count != part_count:
        raise StreamError(f"the end message counts {end.part_count} parts but {part_count} arrived")
    if end.input_hash and end.input_hash != digest:
        raise HashMismatch(
            f"the parts received hash to {digest} but the sender computed {end.input_hash}: bytes were lost"
        )


def read_study_path(study_path: str, root: str | os.PathLike | None) -> list[Instance]:
    """The DICOM files under `study_path`, which must lie inside `root` (links resolved)."""
    if not root:
        raise StudyPathRefused(
            "studyPath requests are disabled on this worker: start it with --study-root (or WORKER_STUDY_ROOT)"
        )
    root_path = Path(root).resolve()
    candidate = Path(study_path)
    if not candidate.is_absolute():
        candidate = root_path / candidate
    folder = candidate.resolve()
    if not folder.is_relative_to(root_path):
        raise StudyPathRefused(f"studyPath {study_path!r} lies outside the study root; use a folder under it")
    if not folder.is_dir():
        raise StudyPathNotFound(f"studyPath {study_path!r} is not a folder under the study root")

    instances: list[Instance] = []
    for path in sorted(folder.rglob("*")):
        # Every entry, folders too: rglob does not descend into a linked folder, which would otherwise
        # drop its files silently instead of refusing the link out of the root.
        if not path.resolve().is_relative_to(root_path):
            raise StudyPathRefused(f"{path.relative_to(folder)} links outside the study root")
        if not path.is_file():
            continue
        try:
            instances.append(Instance.parse(len(instances), path, "application/dicom", path.name))
        except InvalidInput:
            continue  # a DICOMDIR, a README: a folder of a study may hold other files
    if not instances:
        raise StudyPathNotFound(f"studyPath {study_path!r} holds no DICOM file")
    return instances

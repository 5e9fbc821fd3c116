"""Receives a study from the request stream, part by part, into memory or files; or finds a studyPath folder.

Parts are kept in memory while the call's total stays under its memory budget, and written to the call's
spool folder beyond it, so memory stays bounded whatever the study size while small studies never touch
the disk. The input hash (SHA-256 of the JSON part and every part's bytes, in order) is computed here,
once, as the bytes arrive: the model gets it, the bridge receives it with the result. Each part's header
is parsed as soon as the part is complete, while the next ones arrive (see Ingest).

Every mistake in the stream is the sender's: wrong order, a missing end, counts or a hash that do not
match what came, a limit exceeded, or silence for longer than the idle timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from arterys_http.json_text import JsonProblem, load_json_object
from contract import inference_pb2 as pb
from contract import wire
from contract.errors import short
from worker.sdk.study import part_label
from worker.serving import identifiers
from worker.serving.config import StudyLimits
from worker.serving.errors import BadRequest, DataLoss, Idle, StreamEnded, StudyNotFound, StudyPathRefused, TooLarge
from worker.serving.rate import MinimumRate
from worker.serving.spool import PartWriter, Spool

log = logging.getLogger("worker.receive")


@dataclass
class ReceivedPart:
    """One part after the JSON part, in request order: its bytes in memory (`data`) or in a file (`path`)."""

    index: int
    kind: int
    content_type: str
    filename: str
    name: str
    size: int = 0
    data: bytes | None = None
    path: Path | None = None


@dataclass
class ReceivedStudy:
    parts: list[ReceivedPart] = field(default_factory=list)
    input_hash: str = ""
    total_bytes: int = 0


class Ingest:
    """Hashes and stores one call's parts in arrival order, and hands each part, once complete, to `on_part`
    (the servicer parses its DICOM header there), so that parsing overlaps with the arrival of later parts.

    All of it runs on the event loop, in slices of one chunk: measured, a thread of its own per big study
    cost more CPU and more time (hand-offs and contention for the GIL) than it saved (BENCHMARKS.md).
    """

    def __init__(self, request_json: bytes, spool: Spool, on_part: Callable[[ReceivedPart], object]) -> None:
        self.digest = hashlib.sha256(request_json)
        self.spool = spool
        self.on_part = on_part
        self.results: list = []  # what on_part returned, per part, in order
        self._writer: PartWriter | None = None

    def part(self, part: ReceivedPart) -> None:
        self._end_part()
        self._writer = PartWriter(part, self.spool)

    def data(self, data) -> None:
        self.digest.update(data)
        self._writer.write(data)

    def finish(self) -> str:
        """Stores and hands over the last part; returns the input hash."""
        self._end_part()
        return self.digest.hexdigest()

    def _end_part(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            self.results.append(self.on_part(writer.part))

    def close(self) -> None:
        """Frees a part file left open by a call that ended early (the spool removes the files)."""
        if self._writer is not None and self._writer.fd is not None:
            os.close(self._writer.fd)
            self._writer.fd = None


async def unbundled(messages: AsyncIterator) -> AsyncIterator:
    """The request stream with every bundle opened: its messages one by one, as if each had come alone."""
    async for message in messages:
        try:
            for each in wire.unbundle(message):
                yield each
        except wire.NestedBundle:
            raise BadRequest("a bundle holds another bundle; bundle the messages themselves") from None
        except wire.Refused as refused:
            raise BadRequest(str(refused)) from None


async def receive_parts(
    messages: AsyncIterator[pb.InferRequest],
    ingest: Ingest,
    limits: StudyLimits,
    idle_timeout: float,
    on_bytes: Callable[[int], None] = lambda n: None,
    rate: MinimumRate | None = None,
) -> ReceivedStudy:
    """Consumes `part`/`chunk` messages up to `end`; checks order, limits, counts and (when sent) the hash.

    The stream is ended (Idle) when nothing arrives for `idle_timeout` seconds, or (TooSlow) when a window of
    `rate` closes with too few bytes: one timer, set after each message to whichever comes first."""
    loop = asyncio.get_running_loop()
    rate = rate or MinimumRate(0, 0)
    study = ReceivedStudy()
    part_size = 0
    waiting_since = loop.time()
    try:
        async with asyncio.timeout(waiting_since + min(idle_timeout, rate.wait_left())) as timer:
            async for message in messages:
                rate.waited_for(loop.time() - waiting_since)
                # Chunks arrive as views of gRPC's buffer (contract.wire), other messages as InferRequest.
                kind = "chunk" if type(message) is memoryview else message.WhichOneof("message")
                if kind == "chunk":
                    if not study.parts:
                        raise BadRequest("a chunk arrived before any part header")
                    data = message if type(message) is memoryview else message.chunk
                    study.total_bytes += len(data)
                    part_size += len(data)
                    if study.total_bytes > limits.max_study_bytes:
                        raise TooLarge(f"the study exceeds {limits.max_study_bytes} bytes (the worker's limit)")
                    if part_size > limits.max_part_bytes:
                        raise TooLarge(f"part {len(study.parts)} exceeds {limits.max_part_bytes} bytes "
                                       "(the worker's limit)")
                    ingest.data(data)
                    rate.received(len(data))
                    on_bytes(len(data))
                elif kind == "part":
                    if len(study.parts) >= limits.max_parts:
                        raise TooLarge(f"the request has more than {limits.max_parts} parts (the worker's limit)")
                    header = message.part
                    if header.size_hint > limits.max_part_bytes:  # said up front: refused before its bytes
                        raise TooLarge(f"part {len(study.parts) + 1} announces {header.size_hint} bytes, more "
                                       f"than the {limits.max_part_bytes} the worker accepts")
                    part = ReceivedPart(len(study.parts), header.kind, short(header.content_type),
                                        short(header.filename), short(header.name))
                    identifiers.part_arrived(part_label(part.index), part.filename, part.name)
                    study.parts.append(part)
                    part_size = 0
                    ingest.part(part)
                elif kind == "end":
                    study.input_hash = ingest.finish()
                    _check_end(message.end, len(study.parts), study.input_hash)
                    return study
                else:
                    raise BadRequest(f"unexpected {kind or 'empty'} message inside the request stream")
                waiting_since = loop.time()
                timer.reschedule(waiting_since + min(idle_timeout, rate.wait_left()))
    except TimeoutError:
        waited = loop.time() - waiting_since
        if waited < idle_timeout:
            rate.waited_for(waited)  # the timer was the rate's: raises TooSlow
        raise Idle(f"the request stream sent nothing for {idle_timeout:g} s and was ended") from None
    finally:
        ingest.close()
    raise StreamEnded("the request stream ended without an end message")


def _check_end(end: pb.RequestEnd, part_count: int, digest: str) -> None:
    if end.part_count != part_count:
        raise BadRequest(f"the end message counts {end.part_count} parts but {part_count} arrived")
    if end.input_hash and end.input_hash != digest:
        raise DataLoss(
            f"the parts received hash to {digest} but the sender computed {short(end.input_hash)}: bytes were lost"
        )


def parse_request_json(raw: bytes) -> dict:
    """The request's JSON part (in the call's header) as a dict; an absent part is `{}`."""
    try:
        return load_json_object(raw, "the request's JSON part")
    except JsonProblem as problem:
        raise BadRequest(str(problem)) from None


def find_study_path(study_path: str, root: str | os.PathLike | None) -> list[Path]:
    """The files under `study_path`, which must lie inside `root` (links resolved), in path order. Messages
    never show paths, not even what the sender wrote: folder names often hold a patient's name, and messages
    reach logs."""
    identifiers.study_path_named(study_path)
    if not root:
        raise StudyPathRefused(
            "studyPath requests are disabled on this worker: start it with --study-root (or WORKER_STUDY_ROOT)"
        )
    if "\x00" in study_path or len(study_path) > 1024:
        raise BadRequest("studyPath must be a folder name of at most 1024 characters without NUL bytes")
    root_path = Path(root).resolve()
    candidate = Path(study_path)
    if not candidate.is_absolute():
        candidate = root_path / candidate
    try:
        folder = candidate.resolve(strict=False)
        if not folder.is_relative_to(root_path):
            raise StudyPathRefused("the studyPath lies outside the study root; use a folder under it")
        if not folder.is_dir():
            raise StudyNotFound("the studyPath is not a folder under the study root")
        files = []
        for path in sorted(folder.rglob("*")):
            # Every entry, folders too: rglob does not descend into a linked folder, which would otherwise drop
            # its files silently instead of refusing the link out of the root.
            if not path.resolve().is_relative_to(root_path):
                raise StudyPathRefused("a link in the studyPath folder leads outside the study root")
            if path.is_file():
                files.append(path)
    except (OSError, RuntimeError, ValueError) as error:  # symlink loops, names too long, ...
        # The error's text quotes the path: its kind and errno only.
        log.info("the studyPath cannot be read: %s%s", type(error).__name__,
                 f" (errno {error.errno})" if getattr(error, "errno", None) else "")
        raise BadRequest("the studyPath cannot be read (a link that loops, a name too long, or no permission)") \
            from None
    if not files:
        raise StudyNotFound("the studyPath folder holds no file")
    identifiers.folder_listed(folder, files)
    return files

"""Reads an inference answer as it streams in, writing each binary part to its file as its bytes arrive.

Why streaming: an answer can hold masks of hundreds of MiB. The body goes through the bridge's own
sans-IO parser (`arterys_http.multipart`, which imports nothing heavy), so the tool splits the answer exactly
as a careful server would, and a malformed body becomes a sentence instead of a crash.

File names (kept from the original Arterys test tool, which users' scripts already read):

- ``output_masks_N.npy``: the Nth mask binary (N from 1), **raw uint8 bytes without any .npy header**;
  the original wrote them with ``ndarray.tofile`` despite the extension. Read one back with
  ``numpy.fromfile(path, dtype=numpy.uint8).reshape(timepoints, depth, height, width)``.
- ``sc_N.dcm``: the Nth DICOM output (secondary capture, structured report, GSPS...), N from 1.

Whether a binary is a mask or a DICOM file follows its entry in the JSON's ``parts`` (the JSON part
comes first, so it is known in time), else the part's Content-Type. The last part, when it is
``text/plain``, is the hashes line and is kept in memory only; a ``text/plain`` part that turns out not
to be last is written like any binary. Once written, a binary is memory-mapped from its file for
checking and drawing, so a 500 MiB mask costs page cache, not a second copy in the process.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from arterys_http.multipart import (
    Epilogue,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_content_type,
)
from arterys_http.protocol import DICOM_TYPES, MASK_TYPES

HASHES_CONTENT_TYPE = "text/plain"
MASK_FILE = "output_masks_{}.npy"
DICOM_FILE = "sc_{}.dcm"


@dataclass
class ReceivedPart:
    index: int  # 0-based position in the response
    content_type: str  # media type only, lower-cased; '' when absent
    # The contents: in memory while a part is held back (JSON, hashes), else mapped from `path`.
    data: bytearray | memoryview | bytes = field(default_factory=bytearray, repr=False)
    path: Path | None = None  # the file it was written to, if any

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class ReceivedAnswer:
    """What came back, split into parts; `problems` says why it could not be split completely."""

    content_type: str  # the response's Content-Type header as sent
    parts: list[ReceivedPart] = field(default_factory=list)
    complete: bool = False  # the closing delimiter was seen
    problems: list[str] = field(default_factory=list)

    @property
    def json_bytes(self) -> bytes:
        return bytes(self.parts[0].data) if self.parts else b""

    def result_json(self) -> tuple[object, str | None]:
        """(parsed result JSON or None, why it could not be parsed or None)."""
        if not self.parts:
            return None, "the response has no parts, so no result JSON"
        try:
            return json.loads(self.json_bytes.decode("utf-8")), None
        except (UnicodeDecodeError, ValueError) as exc:
            return None, f"part 1 is not valid JSON ({exc})"

    @property
    def hashes_part(self) -> ReceivedPart | None:
        if len(self.parts) >= 2 and self.parts[-1].content_type == HASHES_CONTENT_TYPE:
            return self.parts[-1]
        return None

    @property
    def binary_parts(self) -> list[ReceivedPart]:
        """Every part between the JSON and the hashes (all after the JSON when the hashes are missing)."""
        return self.parts[1:-1] if self.hashes_part is not None else self.parts[1:]

    @property
    def hashes_text(self) -> str | None:
        part = self.hashes_part
        return None if part is None else bytes(part.data).decode("utf-8", errors="replace")


class AnswerReader:
    """Feed it the response body chunk by chunk, then `close()` for the ReceivedAnswer."""

    def __init__(self, content_type: str, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.answer = ReceivedAnswer(content_type)
        self._parser: MultipartParser | None = None
        self._declared: list | None = None  # the JSON's parts, once parsed
        self._handle: BinaryIO | None = None
        self._current: ReceivedPart | None = None
        self._pending: ReceivedPart | None = None  # a text/plain part: the hashes, unless another follows
        self._counts = {"mask": 0, "dicom": 0}
        self._failed = False
        try:
            media_type, _ = parse_content_type(content_type)
            if not media_type.startswith("multipart/"):
                raise MultipartError(f"Content-Type is {media_type}, not multipart/related")
            self._parser = MultipartParser(boundary_from_content_type(content_type))
        except MultipartError as exc:
            self._fail(f"the response body cannot be split into parts: {exc}")

    def feed(self, chunk: bytes) -> None:
        if self._parser is None or self._failed or not chunk:
            return
        try:
            events = self._parser.feed(chunk)
        except MultipartError as exc:
            self._fail(f"the response body is not valid multipart: {exc}")
            return
        self._handle_events(events)

    def close(self) -> ReceivedAnswer:
        if self._parser is not None and not self._failed:
            try:
                self._handle_events(self._parser.close())
            except MultipartError as exc:
                self._fail(f"the response body is incomplete: {exc}")
        self._close_file()
        if self._current is not None and self._current.content_type == HASHES_CONTENT_TYPE:
            self._pending = self._current  # cut off inside the last part: still not a binary
        self._current = None
        return self.answer

    # ------------------------------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        self._failed = True
        self.answer.problems.append(message)

    def _handle_events(self, events: Iterable) -> None:
        for event in events:
            if isinstance(event, PartStart):
                self._start(event)
            elif isinstance(event, PartData):
                if self._handle is not None:
                    self._handle.write(event.data)
                else:
                    self._current.data += event.data
            elif isinstance(event, PartEnd):
                self._end()
            elif isinstance(event, Epilogue):
                self.answer.complete = True

    def _start(self, event: PartStart) -> None:
        if self._pending is not None:  # a text/plain part followed by another: it was a binary after all
            self._write_whole(self._pending)
            self._pending = None
        part = ReceivedPart(event.index, event.content_type)
        self.answer.parts.append(part)
        self._current = part
        if part.index > 0 and part.content_type != HASHES_CONTENT_TYPE:
            part.path = self._next_path(part)
            self._handle = part.path.open("wb")

    def _end(self) -> None:
        part = self._current
        self._close_file()
        if part is not None and part.index == 0:
            result, _ = self.answer.result_json()
            parts = result.get("parts") if isinstance(result, dict) else None
            self._declared = parts if isinstance(parts, list) else None
        elif part is not None and part.content_type == HASHES_CONTENT_TYPE:
            self._pending = part
        self._current = None

    def _close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._current.data = map_file(self._current.path)

    def _write_whole(self, part: ReceivedPart) -> None:
        part.path = self._next_path(part)
        part.path.write_bytes(part.data)

    def _next_path(self, part: ReceivedPart) -> Path:
        kind = self._kind(part.index - 1, part.content_type)
        self._counts[kind] += 1
        name = (DICOM_FILE if kind == "dicom" else MASK_FILE).format(self._counts[kind])
        return self.out_dir / name

    def _kind(self, binary_index: int, content_type: str) -> str:
        declared = self._declared or []
        entry = declared[binary_index] if binary_index < len(declared) else None
        binary_type = entry.get("binary_type") if isinstance(entry, dict) else None
        if binary_type in DICOM_TYPES:
            return "dicom"
        if binary_type in MASK_TYPES:
            return "mask"
        return "dicom" if content_type == "application/dicom" else "mask"


def map_file(path: Path) -> memoryview | bytes:
    """The file's bytes without reading them into the process (read-only; empty files as b'')."""
    with Path(path).open("rb") as handle:
        if not handle.seek(0, 2):
            return b""
        return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))


def read_answer(content_type: str, chunks: Iterable[bytes], out_dir: Path) -> ReceivedAnswer:
    """The whole answer from an iterable of body chunks (e.g. `response.iter_content(1 << 20)`)."""
    reader = AnswerReader(content_type, out_dir)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.close()

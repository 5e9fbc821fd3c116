"""Writes an Arterys inference request as a stream: the body is produced part by part, from files or bytes,
and never held whole; its exact length is known first and its input hash is computed on the way.

Why not a generic encoder: a client must know the exact bytes of every part it sent, to recompute the input
hash the server reports (docs/protocol.md: SHA-256 of the contents of all parts, in order). A 1 GiB study
is read once, in 1 MiB pieces. Parts look like the original test tool's: form-data style
`Content-Disposition` (a field name and a file name) plus a `Content-Type`; a part without a name gets only
its `Content-Type`, as the Arterys app sends them. Any HTTP client that streams an object with `__iter__`
and `__len__` (requests does) sends it with a `Content-Length`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from arterys_http import media

CHUNK_SIZE = 1 << 20


class StudyChanged(RuntimeError):
    """A file shrank or grew while it was being sent: the declared Content-Length would be a lie."""


@dataclass(frozen=True)
class OutgoingPart:
    """One part of the request: its headers' values and where its bytes come from."""

    name: str  # form-data field name
    filename: str
    content_type: str
    size: int
    path: Path | None = None  # streamed from this file when set
    data: bytes | None = None  # else these bytes (the JSON, a converted picture)

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if self.data is not None:
            for start in range(0, len(self.data), chunk_size):
                yield self.data[start : start + chunk_size]
            return
        assert self.path is not None
        left = self.size
        with self.path.open("rb") as handle:
            while left > 0:
                chunk = handle.read(min(chunk_size, left))
                if not chunk:
                    raise StudyChanged(f"{self.path} became shorter while it was being sent")
                left -= len(chunk)
                yield chunk
            if handle.read(1):
                raise StudyChanged(f"{self.path} grew while it was being sent")


def json_part(request_json: dict, content_type: str = media.JSON, name: str = "request_json",
              filename: str = "request") -> OutgoingPart:
    data = json.dumps(request_json).encode("utf-8")
    return OutgoingPart(name, filename, content_type, len(data), data=data)


def file_part(path: Path, name: str, content_type: str) -> OutgoingPart:
    path = Path(path)
    return OutgoingPart(name, path.name, content_type, path.stat().st_size, path=path)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


class MultipartBody:
    """A multipart/related request body that `requests` streams (see the module docstring).

    After a complete iteration `input_hash` is the SHA-256 of every part's contents in order, which is
    what the server must report as the first half of its hashes part.
    """

    def __init__(self, parts: Sequence[OutgoingPart], boundary: str | None = None,
                 on_bytes: Callable[[int], object] | None = None) -> None:
        self.parts = list(parts)
        self.boundary = boundary or uuid.uuid4().hex
        self.on_bytes = on_bytes
        self.input_hash = ""
        self._heads = [self._head(part, first=index == 0) for index, part in enumerate(self.parts)]
        self._closing = f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def content_type(self) -> str:
        return f'multipart/related; boundary="{self.boundary}"'

    def _head(self, part: OutgoingPart, first: bool) -> bytes:
        disposition = (f'Content-Disposition: form-data; name="{_quote(part.name)}"; filename="{_quote(part.filename)}"'
                       "\r\n" if part.name or part.filename else "")
        lines = (("" if first else "\r\n") + f"--{self.boundary}\r\n" + disposition
                 + f"Content-Type: {part.content_type}\r\n\r\n")
        return lines.encode("utf-8")

    def __len__(self) -> int:
        return sum(map(len, self._heads)) + sum(part.size for part in self.parts) + len(self._closing)

    def __iter__(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        for head, part in zip(self._heads, self.parts, strict=True):
            yield self._count(head)
            for chunk in part.chunks():
                digest.update(chunk)
                yield self._count(chunk)
        yield self._count(self._closing)
        self.input_hash = digest.hexdigest()

    def _count(self, data: bytes) -> bytes:
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        return data


def study_path_body(study_path: str, request_json: dict) -> bytes:
    """The application/json form: no DICOM bytes, the server reads the folder itself."""
    return json.dumps({"studyPath": study_path, **request_json}).encode("utf-8")

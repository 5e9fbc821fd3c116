"""Builds the inference request the way the Arterys app sends it, and streams it from disk.

Why a hand-made body instead of `requests_toolbelt.MultipartEncoder`: the tool must know the exact
bytes of every part it sent, to recompute the input hash the server reports (docs/protocol.md: SHA-256 of
the contents of all parts, in order). The body below hashes each part's contents while it streams them,
so a 1 GiB study is read once, in 1 MiB pieces, and never held in memory. It still looks like the
original test tool's requests: form-data style `Content-Disposition` (fields `request_json`, then
`1`, `2`, ... with file names) plus a `Content-Type` per part, and a quoted boundary.

`requests` streams any body object that has `__iter__` and `__len__`: the length becomes the
Content-Length header (no chunked encoding, which some servers refuse) and each item of the iteration
is sent as it is, so the chunk size is ours.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from testtool.study import InputImage, LoadedStudy

CHUNK_SIZE = 1 << 20
JSON_CONTENT_TYPE = "text/json"  # what the original test tool sent; the bridge takes it like application/json
ATTACHMENT_CONTENT_TYPE = "application/octet-stream"
DICOM_CONTENT_TYPE = "application/dicom"
# The model-type flags of the original tool only choose a default inference command.
DEFAULT_COMMANDS = {
    "segmentation": "get-probability-mask",
    "bounding_box": "get-bounding-box-2d",
    "classification": "get-classification",
}


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


def json_part(request_json: dict) -> OutgoingPart:
    data = json.dumps(request_json).encode("utf-8")
    return OutgoingPart("request_json", "request", JSON_CONTENT_TYPE, len(data), data=data)


def file_part(path: Path, name: str, content_type: str) -> OutgoingPart:
    path = Path(path)
    return OutgoingPart(name, path.name, content_type, path.stat().st_size, path=path)


def image_part(image: InputImage, name: str) -> OutgoingPart:
    if image.path is not None:
        return file_part(image.path, name, DICOM_CONTENT_TYPE)
    data = image.read_bytes()  # a PNG/JPEG converted to DICOM: only exists in memory
    return OutgoingPart(name, image.source.with_suffix(".dcm").name, DICOM_CONTENT_TYPE, len(data), data=data)


def request_parts(request_json: dict, attachments: Sequence[Path], images: Sequence[InputImage]) -> list[OutgoingPart]:
    """JSON first, then attachments, then instances in send order; fields numbered from 1 as the original did."""
    parts = [json_part(request_json)]
    for number, path in enumerate(attachments, start=1):
        parts.append(file_part(path, str(number), ATTACHMENT_CONTENT_TYPE))
    for number, image in enumerate(images, start=len(attachments) + 1):
        parts.append(image_part(image, str(number)))
    return parts


def build_request_json(
    command: str | None,
    study: LoadedStudy | None = None,
    send_study_size: bool = False,
    options: dict[str, str] | None = None,
    output_formats: list[str] | None = None,
) -> dict:
    """The request JSON. Options come last so that a user can override any key on purpose.

    The study size is what the original tool sent with -S: depth = number of DICOM instances sent,
    height/width = Rows/Columns of the first image (the original also counted attachments in depth;
    that was a bug and is not copied).
    """
    request: dict = {}
    if command:
        request["inference_command"] = command
    if send_study_size and study is not None:
        first = next((image for image in study.images if image.has_pixels), None)
        request["depth"] = len(study.images)
        request["height"] = first.rows if first else 0
        request["width"] = first.cols if first else 0
    if output_formats:
        request["output_formats"] = list(output_formats)
    request.update(options or {})
    return request


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
        lines = (
            ("" if first else "\r\n") + f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(part.name)}"; filename="{_quote(part.filename)}"\r\n'
            f"Content-Type: {part.content_type}\r\n\r\n"
        )
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

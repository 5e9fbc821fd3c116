"""The test tool's request: which parts it sends, in which order, and its request JSON.

The body itself is written by arterys_http.request (streamed, hashed on the way). Like the original test
tool, parts are form-data fields `request_json`, then `1`, `2`, ... with file names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from arterys_http.request import (  # noqa: F401 - the tool's CLI takes the body writer from here
    MultipartBody,
    OutgoingPart,
    StudyChanged,
    file_part,
    json_part,
    study_path_body,
)
from testtool.study import InputImage, LoadedStudy

JSON_CONTENT_TYPE = "text/json"  # what the original test tool sent; the bridge takes it like application/json
ATTACHMENT_CONTENT_TYPE = "application/octet-stream"
DICOM_CONTENT_TYPE = "application/dicom"
# The model-type flags of the original tool only choose a default inference command.
DEFAULT_COMMANDS = {
    "segmentation": "get-probability-mask",
    "bounding_box": "get-bounding-box-2d",
    "classification": "get-classification",
}


def image_part(image: InputImage, name: str) -> OutgoingPart:
    if image.path is not None:
        return file_part(image.path, name, DICOM_CONTENT_TYPE)
    data = image.read_bytes()  # a PNG/JPEG converted to DICOM: only exists in memory
    return OutgoingPart(name, image.source.with_suffix(".dcm").name, DICOM_CONTENT_TYPE, len(data), data=data)


def request_parts(request_json: dict, attachments: Sequence[Path], images: Sequence[InputImage]) -> list[OutgoingPart]:
    """JSON first, then attachments, then instances in send order; fields numbered from 1 as the original did."""
    parts = [json_part(request_json, JSON_CONTENT_TYPE)]
    for number, path in enumerate(attachments, start=1):
        parts.append(file_part(path, str(number), ATTACHMENT_CONTENT_TYPE))
    for number, image in enumerate(images, start=len(attachments) + 1):
        parts.append(image_part(image, str(number)))
    return parts


# "part 3" as the services write it: the third part after the JSON part (they never quote its file name).
_PART_NUMBER = re.compile(r"\bpart (\d+)\b")


def sent_files(attachments: Sequence[Path], images: Sequence[InputImage]) -> list[Path]:
    """The file each part after the JSON part came from, in send order (request_parts' order)."""
    return [*attachments, *(image.source for image in images)]


def name_parts(message: str, files: Sequence[Path]) -> str:
    """A service's message with the file each "part N" came from: the bridge and the worker name parts by number
    only (file names often hold a patient's name, and their messages reach their logs); the tool knows the
    files it sent."""
    def named(match: re.Match) -> str:
        number = int(match[1])
        return f"{match[0]} ({files[number - 1]})" if 1 <= number <= len(files) else match[0]

    return _PART_NUMBER.sub(named, message)


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



"""Which answer formats a request asks for: the request's "output_formats", else the worker's default.

"arterys" is the protocol's JSON + raw mask bytes that only the Arterys viewer draws; "dicom" adds DICOM
Segmentations and one Comprehensive 3D SR that any PACS stores. Both may be asked for at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.api import InvalidInput
from worker.errors import short

OUTPUT_FORMATS = ("arterys", "dicom")
DEFAULT_OUTPUT_FORMATS = ("arterys",)
REQUEST_KEY = "output_formats"


class UnknownOutputFormat(InvalidInput, ValueError):
    """A request (HTTP 400, as InvalidInput) or a --output-formats flag (ValueError) names a bad format."""


def _checked(value, where: str) -> list[str]:
    known = ", ".join(f'"{f}"' for f in OUTPUT_FORMATS)
    if not isinstance(value, (list, tuple)) or not value:
        raise UnknownOutputFormat(
            f"{where} must be a non-empty list of formats, e.g. [\"arterys\", \"dicom\"]; got {short(repr(value))} "
            f"(known: {known})"
        )
    formats: list[str] = []
    for item in value:
        if item not in OUTPUT_FORMATS:
            raise UnknownOutputFormat(f"{where} names an unknown format {short(repr(item))}; known: {known}")
        if item not in formats:  # a repeated format asks for nothing more
            formats.append(item)
    return formats


def output_formats(request_json: Mapping | None, default: Sequence[str] = DEFAULT_OUTPUT_FORMATS) -> list[str]:
    """The formats to answer in: the request's "output_formats" list when present, else `default`.

    Raises UnknownOutputFormat (an InvalidInput and a ValueError) naming the bad value and the known ones.
    """
    if isinstance(request_json, Mapping) and request_json.get(REQUEST_KEY) is not None:
        return _checked(request_json[REQUEST_KEY], f'the request\'s "{REQUEST_KEY}"')
    return _checked(list(default), "the worker's --output-formats")


def parse_output_formats_flag(text: str) -> list[str]:
    """`--output-formats` / WORKER_OUTPUT_FORMATS: comma-separated, e.g. "arterys,dicom"."""
    return _checked([item.strip() for item in text.split(",") if item.strip()], "--output-formats")

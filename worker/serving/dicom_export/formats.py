"""Which answer formats a request asks for: the request's "output_formats", else the worker's default.

"arterys" is the protocol's JSON + raw mask bytes that only the Arterys viewer draws; "dicom" adds DICOM
Segmentations and TID 1500 reports that any PACS stores. Both may be asked for at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from contract.errors import short
from worker.sdk.refusals import InvalidInput

OUTPUT_FORMATS = ("arterys", "dicom")
DEFAULT_OUTPUT_FORMATS = ("arterys",)
REQUEST_KEY = "output_formats"
# Probability masks and heatmaps become BINARY segments at their threshold unless the request asks for
# FRACTIONAL ones (which OHIF cannot show: docs/dicom-outputs.md).
SEGMENTATION_TYPE_KEY = "dicom_segmentation_type"
SEGMENTATION_TYPES = ("BINARY", "FRACTIONAL")


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
    fractional_asked(request_json)  # checked with the header too, before the study is uploaded
    if isinstance(request_json, Mapping) and request_json.get(REQUEST_KEY) is not None:
        return _checked(request_json[REQUEST_KEY], f'the request\'s "{REQUEST_KEY}"')
    return _checked(list(default), "the worker's --output-formats")


def fractional_asked(request_json: Mapping | None) -> bool:
    """Whether the request asks for FRACTIONAL segmentations ("dicom_segmentation_type": "FRACTIONAL").

    Raises UnknownOutputFormat for a value other than "BINARY" or "FRACTIONAL" (any case)."""
    value = request_json.get(SEGMENTATION_TYPE_KEY) if isinstance(request_json, Mapping) else None
    if value is None:
        return False
    if not isinstance(value, str) or value.upper() not in SEGMENTATION_TYPES:
        raise UnknownOutputFormat(
            f'the request\'s "{SEGMENTATION_TYPE_KEY}" must be "BINARY" or "FRACTIONAL"; got {str(value)[:40]!r}')
    return value.upper() == "FRACTIONAL"


def parse_output_formats_flag(text: str) -> list[str]:
    """`--output-formats` / WORKER_OUTPUT_FORMATS: comma-separated, e.g. "arterys,dicom"."""
    return _checked([item.strip() for item in text.split(",") if item.strip()], "--output-formats")

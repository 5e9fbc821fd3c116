"""The content types of the Arterys protocol, in one place."""

from __future__ import annotations

from arterys_http.protocol import DICOM_TYPES

MULTIPART_RELATED = "multipart/related"
MULTIPART_FORM_DATA = "multipart/form-data"  # sent by some clients for the same body; read the same way
JSON = "application/json"
JSON_PART_TYPES = ("application/json", "text/json", "")  # what a request's first part may say it is
DICOM = "application/dicom"
BINARY = "application/binary"  # mask parts of an answer
ATTACHMENT = "application/octet-stream"  # what clients send for non-DICOM request parts
HASHES = "text/plain"  # the last part of an answer


def binary_content_type(binary_type: str | None) -> str:
    """The content type of an answer's binary part: DICOM files as application/dicom, masks as binary."""
    return DICOM if binary_type in DICOM_TYPES else BINARY

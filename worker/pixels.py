"""Checks that an instance's pixel data is what its header declares, before any model sees it.

A header is cheap to forge: Rows = Columns = 12000 with 16 bytes of pixel data is a 7 KB request that
makes a model allocate gigabytes, and a file cut short makes pydicom fail deep inside a model. So after
the header is parsed (without pixels) the pixel data element's own header is read where the parse
stopped: native pixel data must hold at least rows x columns x frames x samples x bits, encapsulated
(compressed) data must start with an item, and the decoded size the header declares must stay under
the worker's limit. Nothing is decoded here: the cost is a few bytes read per instance.
"""

from __future__ import annotations

import struct

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from worker.config import StudyLimits
from worker.errors import BadRequest, TooLarge

PIXEL_TAGS = {(0x7FE0, 0x0010): "PixelData", (0x7FE0, 0x0008): "FloatPixelData",
              (0x7FE0, 0x0009): "DoubleFloatPixelData"}
LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM_TAG = (0xFFFE, 0xE000)


class NotDicom(BadRequest):
    """The bytes are not a readable DICOM file at all (a studyPath folder may skip such files)."""


def _int(header: pydicom.Dataset, keyword: str, default: int = 0) -> int:
    value = header.get(keyword, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        raise BadRequest(f"{keyword} must be a number, got {str(value)[:40]!r}") from None


def check_pixel_data(header: pydicom.Dataset, handle, size: int, limits: StudyLimits, label: str) -> None:
    """`handle` is positioned where dcmread(stop_before_pixels=True) stopped; `size` is the file's length."""
    try:
        rows, columns = _int(header, "Rows"), _int(header, "Columns")
        frames = _int(header, "NumberOfFrames", 1)
        samples = _int(header, "SamplesPerPixel", 1)
        bits = _int(header, "BitsAllocated", 0)
    except BadRequest as error:
        raise BadRequest(f"{label}: {error.message}") from None
    # A deflated file's body is one zlib stream: the pixel element is found by inflating it, and its
    # length cannot be compared with the (compressed) file size.
    deflated = header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    element = None if deflated else _pixel_element(header, handle)
    if rows <= 0 or columns <= 0:
        return  # not an image (a structured report, a presentation state): nothing to check
    if frames < 1:
        raise BadRequest(f"{label} declares NumberOfFrames {frames}; an image has at least one frame")
    if not 1 <= samples <= 4:
        raise BadRequest(f"{label} declares SamplesPerPixel {samples}; DICOM images have 1, 3 or 4")
    if bits not in (1, 8, 16, 32, 64):
        raise BadRequest(f"{label} declares BitsAllocated {bits}; DICOM images use 1, 8, 16, 32 or 64")
    pixels = rows * columns * frames * samples
    decoded = (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)
    shape = f"{rows} x {columns} pixels x {frames} frame(s) x {samples} sample(s) x {bits} bits"
    if decoded > limits.max_image_bytes:
        raise TooLarge(f"{label} declares {shape} = {decoded} bytes of pixels, more than the worker accepts "
                       f"per instance ({limits.max_image_bytes})")
    if deflated:
        element = _inflated_pixel_element(handle)  # only now: the declared size is within the limit
    if element is None:
        raise BadRequest(f"{label} declares {shape} but carries no pixel data")
    name, start, length = element
    if length == UNDEFINED_LENGTH:
        if not _starts_with_item(header, handle):
            raise BadRequest(f"{label}: its compressed {name} does not start with an item: the file is damaged")
        return
    if not deflated and start + length > size:
        raise BadRequest(f"{label} is cut short: its {name} declares {length} bytes but only {size - start} follow")
    if name == "PixelData" and length < decoded:
        raise BadRequest(f"{label} declares {shape} = {decoded} bytes of pixels but its PixelData holds {length}")


def _pixel_element(header: pydicom.Dataset, handle) -> tuple[str, int, int] | None:
    """(keyword, offset of the value, value length) of the pixel data element at the handle, or None."""
    implicit, little = header.original_encoding
    if implicit is None:  # nothing was read with a transfer syntax: no dataset body at all
        return None
    endian = "<" if little else ">"
    head = handle.read(8)
    if len(head) < 8:
        return None
    group, element = struct.unpack(endian + "HH", head[:4])
    name = PIXEL_TAGS.get((group, element))
    if name is None:
        return None
    if implicit:
        (length,) = struct.unpack(endian + "L", head[4:8])
        return name, handle.tell(), length
    vr = head[4:6]
    if vr in LONG_LENGTH_VRS:
        more = handle.read(4)
        if len(more) < 4:
            return None
        (length,) = struct.unpack(endian + "L", more)
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
    return name, handle.tell(), length


def _inflated_pixel_element(handle) -> tuple[str, int, int] | None:
    """(keyword, 0, value length) of the pixel data element of a deflated file, read whole (its declared size
    was checked against the limit before)."""
    handle.seek(0)
    dataset = pydicom.dcmread(handle)
    for name in PIXEL_TAGS.values():
        if name in dataset:
            return name, 0, len(dataset[name].value)
    return None


def _starts_with_item(header: pydicom.Dataset, handle) -> bool:
    _, little = header.original_encoding
    head = handle.read(4)
    return len(head) == 4 and struct.unpack(("<" if little else ">") + "HH", head) == ITEM_TAG

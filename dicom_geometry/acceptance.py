"""Which files the worker accepts as DICOM instances: one rule, shared by the worker and the test tool.

The worker reads each `application/dicom` part with `read_instance_header` before any model sees it; the
test tool calls the same function on each file of a study folder and leaves out, with a note, the files
the worker would refuse, so that one stray file does not fail the whole request.

The rule: a DICOM Part 10 file (preamble, 'DICM', file meta information: pydicom reads it without
force), with a SOPInstanceUID, whose pixel data is what its header declares. A header is cheap to forge:
Rows = Columns = 12000 with 16 bytes of pixel data is a 7 KB request that makes a model allocate
gigabytes, and a file cut short makes pydicom fail deep inside a model. So after the header is parsed
(without pixels) the pixel data element's own header is read where the parse stopped: native pixel data
must hold at least rows x columns x frames x samples x bits, encapsulated (compressed) data must start
with an item, and the decoded size the header declares must stay under the limit. Nothing is decoded
here: the cost is a few bytes read per instance.
"""

from __future__ import annotations

import struct

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

PIXEL_TAGS = {(0x7FE0, 0x0010): "PixelData", (0x7FE0, 0x0008): "FloatPixelData",
              (0x7FE0, 0x0009): "DoubleFloatPixelData"}
LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM_TAG = (0xFFFE, 0xE000)
# Decoded size one instance may declare (the worker's --max-image-bytes default).
DEFAULT_MAX_IMAGE_BYTES = 1 << 30


class Refused(Exception):
    """The worker refuses this file as an instance; `message` says why, naming it by its label."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotReadable(Refused):
    """Not a DICOM Part 10 file pydicom reads (another kind of file, damaged, no Part 10 header)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # the parser's own words, for who looks at the file (never sent to a client)


class ImageTooLarge(Refused):
    """The image it declares is larger than the limit."""


def read_instance_header(handle, size: int, label: str,
                         max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> pydicom.Dataset:
    """The header (no pixel data) of the file open as `handle` (`size` bytes long), or `Refused`."""
    try:
        header = pydicom.dcmread(handle, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many kinds on damaged files; all mean "not readable"
        reason = f"{type(error).__name__}: {str(error)[:200]}"
        raise NotReadable(f"{label} is sent as application/dicom but is not a readable DICOM file (damaged, cut "
                          "short, without a Part 10 header, or another kind of file)", reason) from error
    if not str(header.get("SOPInstanceUID") or "").strip():
        raise Refused(f"{label} has no SOPInstanceUID; every instance needs one")
    try:
        check_pixel_data(header, handle, size, max_image_bytes, label)
    except Refused:
        raise
    except Exception as error:  # the pixel element's own header is damaged
        raise NotReadable(f"{label} is sent as application/dicom but is not a readable DICOM file (damaged, cut "
                          "short, without a Part 10 header, or another kind of file)",
                          f"{type(error).__name__}: {str(error)[:200]}") from error
    return header


def _int(header: pydicom.Dataset, keyword: str, default: int = 0) -> int:
    value = header.get(keyword, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        raise Refused(f"{keyword} must be a number, got {str(value)[:40]!r}") from None


def check_pixel_data(header: pydicom.Dataset, handle, size: int, max_image_bytes: int, label: str) -> None:
    """`handle` is positioned where dcmread(stop_before_pixels=True) stopped; `size` is the file's length."""
    try:
        rows, columns = _int(header, "Rows"), _int(header, "Columns")
        frames = _int(header, "NumberOfFrames", 1)
        samples = _int(header, "SamplesPerPixel", 1)
        bits = _int(header, "BitsAllocated", 0)
    except Refused as error:
        raise Refused(f"{label}: {error.message}") from None
    # A deflated file's body is one zlib stream: the pixel element is found by inflating it, and its
    # length cannot be compared with the (compressed) file size.
    deflated = header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    element = None if deflated else _pixel_element(header, handle)
    if rows <= 0 or columns <= 0:
        return  # not an image (a structured report, a presentation state): nothing to check
    if frames < 1:
        raise Refused(f"{label} declares NumberOfFrames {frames}; an image has at least one frame")
    if not 1 <= samples <= 4:
        raise Refused(f"{label} declares SamplesPerPixel {samples}; DICOM images have 1, 3 or 4")
    if bits not in (1, 8, 16, 32, 64):
        raise Refused(f"{label} declares BitsAllocated {bits}; DICOM images use 1, 8, 16, 32 or 64")
    pixels = rows * columns * frames * samples
    decoded = (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)
    shape = f"{rows} x {columns} pixels x {frames} frame(s) x {samples} sample(s) x {bits} bits"
    if decoded > max_image_bytes:
        raise ImageTooLarge(f"{label} declares {shape} = {decoded} bytes of pixels, more than the worker accepts "
                            f"per instance ({max_image_bytes})")
    if deflated:
        element = _inflated_pixel_element(handle)  # only now: the declared size is within the limit
    if element is None:
        raise Refused(f"{label} declares {shape} but carries no pixel data")
    name, start, length = element
    if length == UNDEFINED_LENGTH:
        if not _starts_with_item(header, handle):
            raise Refused(f"{label}: its compressed {name} does not start with an item: the file is damaged")
        return
    if not deflated and start + length > size:
        raise Refused(f"{label} is cut short: its {name} declares {length} bytes but only {size - start} follow")
    if name == "PixelData" and length < decoded:
        raise Refused(f"{label} declares {shape} = {decoded} bytes of pixels but its PixelData holds {length}")


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

"""Turns one frame of an input image into the 8-bit picture a viewer would first show.

Why its own module: decoding (any transfer syntax, one frame at a time) and windowing (the DICOM's own
rescale and VOI window, else min/max) are checked against hand-computed values, independently of what
is drawn on top (testtool.overlay, testtool.drawing).
"""

from __future__ import annotations

import io
import math

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_geometry import frame_attribute
from testtool.study import InputImage


def frame_pixels(image: InputImage, frame_index: int = 0) -> np.ndarray:
    """One decoded frame (rows, cols) or (rows, cols, 3), whatever the transfer syntax.

    Only that frame is read when the codec allows it, so a big multi-frame file is not loaded whole.
    """
    if not 0 <= frame_index < image.frames:
        raise IndexError(f"frame {frame_index} of an instance with {image.frames} frame(s)")
    source = io.BytesIO(image._memory) if image._memory is not None else image.path
    if image.forced:
        ds = dcmread(source, force=True)
        _fill_transfer_syntax(ds)
        array = pixel_array(ds, index=frame_index)
    else:
        array = pixel_array(source, index=frame_index)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _fill_transfer_syntax(ds: Dataset) -> None:
    """A preamble-less file has no file meta; decode it with the encoding pydicom detected."""
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def to_display(image: InputImage, frame_pixels: np.ndarray, frame_index: int = 0) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) as a viewer would first show it: the DICOM's own window, else min/max."""
    ds = image.dataset
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    values = np.asarray(frame_pixels)
    if photometric == "PALETTE COLOR" and values.ndim == 2:
        try:
            values = apply_color_lut(values, ds)
        except Exception:  # noqa: BLE001, S110 - a broken palette still shows as grayscale below
            pass
    if values.ndim == 3:
        return _colour_to_uint8(values, ds)
    rescale, voi = "PixelValueTransformationSequence", "FrameVOILUTSequence"
    slope = _first_float(frame_attribute(ds, frame_index, rescale, "RescaleSlope"), 1.0)
    intercept = _first_float(frame_attribute(ds, frame_index, rescale, "RescaleIntercept"), 0.0)
    modality = values.astype(np.float64) * slope + intercept
    center = _first_float(frame_attribute(ds, frame_index, voi, "WindowCenter"), None)
    width = _first_float(frame_attribute(ds, frame_index, voi, "WindowWidth"), None)
    if center is not None and width is not None and width >= 1:
        shown = window_linear(modality, center, width)
    else:
        shown = _min_max(modality)
    return 255 - shown if photometric == "MONOCHROME1" else shown


def window_linear(values, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear VOI function to 0..255, rounded half up.

    x <= c - 0.5 - (w-1)/2 -> 0;  x > c - 0.5 + (w-1)/2 -> 255;
    else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.  Widths below 1 are invalid in DICOM and act as 1.
    """
    x = np.asarray(values, dtype=np.float64)
    c, w = float(center), max(float(width), 1.0)
    low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    inside = ((x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * 255.0
    y = np.where(x <= low, 0.0, np.where(x > high, 255.0, inside))
    return round_to_uint8(y)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return round_to_uint8((values - low) * 255.0 / (high - low))


def round_to_uint8(values: np.ndarray) -> np.ndarray:
    """Half up (127.5 -> 128), like the overlay blending, so hand-computed test values agree."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _colour_to_uint8(values: np.ndarray, ds: Dataset) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    bits = int(ds.get("BitsStored", 16) or 16)
    if "RedPaletteColorLookupTableDescriptor" in ds:
        bits = 16 if values.max() > 255 else 8  # palette tables are 8- or 16-bit, whatever BitsStored says
    shift = max(bits - 8, 0)
    return np.clip(values.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def _first_float(value, default):
    """First value of a possibly multi-valued attribute (DICOM allows several windows)."""
    if value is None:
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default

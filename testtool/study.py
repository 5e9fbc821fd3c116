"""Loads a study folder the way the test tool sends it, and turns its pixels into something to look at.

Why this exists: a model author points the tool at whatever folder they have (nested exports, stray
README files, a DICOMDIR, a few PNG screenshots). The tool must send every DICOM instance, convert
PNG/JPEG files into real DICOM (the bridge and the app only take DICOM), skip the rest with a reason a
person understands, and order the instances exactly as the protocol's mask layout counts slices:
series by series, along the slice normal, time point by time point. Pixels are never kept in memory:
an instance is re-read from disk when it is sent or drawn, so a 1 GiB study costs a few headers.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

SECONDARY_CAPTURE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
MEDIA_STORAGE_DIRECTORY = UID("1.2.840.10008.1.3.10")
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
UNDEFINED_LENGTH = 0xFFFFFFFF
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_POSITION_DECIMALS = 3  # positions closer than a micrometre are the same slice


@dataclass(eq=False)
class InputImage:
    """One instance to send. Holds its header only; `read_bytes()` fetches the file when needed."""

    path: Path | None  # the file sent as is; None for a converted PNG/JPEG (bytes held in memory)
    source: Path  # the file this came from (the PNG/JPEG for a converted one), for messages
    dataset: Dataset  # header, read with stop_before_pixels
    sop_instance_uid: str
    series_instance_uid: str
    rows: int
    cols: int
    frames: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None = None
    slice_index: int = 0  # slice of the first frame within its time point (frames are later slices)
    timepoint: int = 0
    content_type: str = "application/dicom"
    forced: bool = False  # read without the DICM preamble: decoding has to force it too
    _memory: bytes | None = field(default=None, repr=False)

    def read_bytes(self) -> bytes:
        """The exact bytes to send: the file on disk, or the converted secondary capture."""
        if self._memory is not None:
            return self._memory
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def has_pixels(self) -> bool:
        """False for non-image instances (structured reports, presentation states): nothing to draw."""
        return self.rows > 0 and self.cols > 0

    @property
    def pixel_spacing(self) -> tuple[float, float] | None:
        """(row spacing, column spacing) in mm, from the classic or the enhanced (functional group) header."""
        value = _frame_attribute(self.dataset, 0, "PixelMeasuresSequence", "PixelSpacing")
        if value is None or len(value) != 2:
            return None
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None


@dataclass
class LoadedStudy:
    study_instance_uid: str
    images: list[InputImage]  # send order
    series: dict[str, list[InputImage]]  # same order, keyed by SeriesInstanceUID
    skipped: list[tuple[Path, str]]

    def series_shape(self, series_uid: str) -> tuple[int, int]:
        """(timepoints, depth) a 3D mask on this series must have; depth counts frames as slices."""
        images = self.series.get(series_uid, [])
        if not images:
            return 0, 0
        depth: Counter[int] = Counter()
        for image in images:
            depth[image.timepoint] += image.frames
        return max(depth) + 1, max(depth.values())


# ---------------------------------------------------------------------------------------------------
# Loading


def load_study(folder: Path) -> LoadedStudy:
    """Reads every file under `folder` (sorted, recursive); never raises for a bad file."""
    folder = Path(folder)
    dicoms: list[InputImage] = []
    pictures: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        kind, value = _classify(path)
        if kind == "dicom":
            dicoms.append(value)
        elif kind == "picture":
            pictures.append(path)
        else:
            skipped.append((path, value))

    study_uid = _majority([str(i.dataset.get("StudyInstanceUID", "")) for i in dicoms]) or generate_uid()
    template = dicoms[0].dataset if dicoms else None
    next_number = max([_series_number(i.dataset) or 0 for i in dicoms], default=0) + 1
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in pictures:
        by_folder[path.parent].append(path)
    for number, (parent, paths) in enumerate(sorted(by_folder.items()), start=next_number):
        converted, problems = _convert_folder(parent, paths, study_uid, number, template)
        dicoms.extend(converted)
        skipped.extend(problems)

    grouped: dict[str, list[InputImage]] = defaultdict(list)
    for image in dicoms:
        grouped[image.series_instance_uid].append(image)
    series_order = sorted(grouped, key=lambda uid: (_series_number(grouped[uid][0].dataset) or math.inf, uid))
    series = {uid: order_series(grouped[uid]) for uid in series_order}
    images = [image for uid in series_order for image in series[uid]]
    return LoadedStudy(study_uid, images, series, skipped)


def _classify(path: Path) -> tuple[str, object]:
    """('dicom', InputImage) | ('picture', path) | ('skip', reason)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return "skip", f"cannot be read: {exc.strerror or exc}"
    if size == 0:
        return "skip", "empty file"
    try:
        return _read_dicom(path, force=False)
    except InvalidDicomError:
        pass  # no DICM preamble: maybe a picture, maybe a preamble-less DICOM
    except Exception as exc:  # noqa: BLE001 - any parser failure means "broken", never a crash
        return "skip", f"broken DICOM file ({_plain(exc)})"
    picture = _picture_format(path)
    if picture in ("PNG", "JPEG", "MPO"):
        return "picture", path
    try:
        kind, value = _read_dicom(path, force=True)
        if kind == "dicom" or value != "not DICOM":
            return kind, value
    except Exception:  # noqa: BLE001, S110 - forced parsing of a non-DICOM file fails in many ways
        pass
    if picture:
        return "skip", f"a {picture} image: only PNG and JPEG pictures are converted to DICOM"
    if _looks_like_text(path):
        return "skip", "a text file, not DICOM or a PNG/JPEG picture"
    return "skip", "not a DICOM file, nor a PNG/JPEG picture"


def _read_dicom(path: Path, force: bool) -> tuple[str, object]:
    """Reads a header and checks the file is whole; pixel data itself is only located, not loaded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # defer_size: large values (the pixels) are skipped over, but their offset and length are kept
        full = dcmread(path, force=force, defer_size=1024)
    meta = getattr(full, "file_meta", None) or {}
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or full.get("SOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in full:
        return "skip", "a DICOMDIR (an index of other files, not an image)"
    sop_uid = str(full.get("SOPInstanceUID", "") or "")
    if not _UID_RE.match(sop_uid):
        if force:
            return "skip", "not DICOM"
        return "skip", "DICOM file without a SOPInstanceUID (truncated or not an instance)"
    problem = _completeness_problem(path, full, [str(w.message) for w in caught], sop_class)
    if problem:
        return "skip", problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = dcmread(path, force=force, stop_before_pixels=True)
    return "dicom", _make_image(path, path, header, forced=force)


def _completeness_problem(path: Path, ds: Dataset, messages: list[str], sop_class: str) -> str | None:
    """pydicom reads truncated files silently, so check that what the header promises is in the file."""
    if any("End of file" in m for m in messages):
        return "truncated DICOM file: it ends in the middle of its data"
    size = path.stat().st_size
    tags = list(ds.keys())
    for tag in {*([max(tags)] if tags else []), *[t for t in PIXEL_TAGS if t in ds]}:
        raw = ds.get_item(tag, keep_deferred=True)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if tell is not None and length not in (None, UNDEFINED_LENGTH) and tell + length > size:
            name = keyword_for_tag(tag) or str(tag)
            return f"truncated DICOM file: {name} needs {tell + length} bytes, the file has only {size}"
    has_pixels = any(t in ds for t in PIXEL_TAGS)
    is_image = "Rows" in ds or (bool(sop_class) and "Image Storage" in UID(sop_class).name)
    if is_image and not has_pixels:
        return "DICOM image without pixel data (truncated?)"
    return None


def _make_image(path: Path | None, source: Path, header: Dataset, forced: bool, memory=None) -> InputImage:
    orientation = _frame_attribute(header, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
    position = _frame_attribute(header, 0, "PlanePositionSequence", "ImagePositionPatient")
    return InputImage(
        path=path,
        source=source,
        dataset=header,
        sop_instance_uid=str(header.SOPInstanceUID),
        series_instance_uid=str(header.get("SeriesInstanceUID", "") or f"no-series-uid:{source.parent}"),
        rows=int(header.get("Rows", 0) or 0),
        cols=int(header.get("Columns", 0) or 0),
        frames=max(1, int(header.get("NumberOfFrames", 1) or 1)),
        position=_floats(position, 3),
        orientation=_floats(orientation, 6),
        forced=forced,
        _memory=memory,
    )


def _frame_attribute(ds: Dataset, frame: int, group: str, keyword: str):
    """A classic top-level attribute, else the enhanced multi-frame functional group one."""
    if keyword in ds:
        return ds.get(keyword)
    places = (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0))
    for sequence, index in places:
        items = ds.get(sequence)
        if items and len(items) > index and group in items[index] and items[index][group]:
            value = items[index][group][0].get(keyword)
            if value is not None:
                return value
    return None


def _floats(value, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(v) for v in numbers) else None


def _series_number(ds: Dataset) -> int | None:
    try:
        return int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return None


def _majority(values: list[str]) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _plain(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # a multi-byte character cut by the 4096 limit
    return True


def _picture_format(path: Path) -> str | None:
    """Pillow's name for the picture format ("PNG", "JPEG", ...), by content, or None."""
    try:
        with Image.open(path) as img:
            return img.format
    except (UnidentifiedImageError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------
# PNG/JPEG -> DICOM secondary capture


def _convert_folder(parent, paths, study_uid, series_number, template):
    """One secondary-capture series per folder of pictures, numbered in file-name order."""
    series_uid = generate_uid()
    converted, problems = [], []
    for number, path in enumerate(sorted(paths, key=lambda p: p.name), start=1):
        try:
            data = secondary_capture_bytes(
                path, study_uid=study_uid, series_uid=series_uid, series_number=series_number,
                instance_number=number, template=template,
            )
        except Exception as exc:  # noqa: BLE001 - a corrupt picture is skipped, not fatal
            problems.append((path, f"picture could not be converted to DICOM ({_plain(exc)})"))
            continue
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
        converted.append(_make_image(None, path, header, forced=False, memory=data))
    return converted, problems


def secondary_capture_bytes(
    path: Path,
    *,
    study_uid: str,
    series_uid: str,
    series_number: int,
    instance_number: int,
    template: Dataset | None = None,
) -> bytes:
    """A PNG/JPEG as an 8-bit Secondary Capture file (MONOCHROME2 or RGB); patient data from `template`."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)  # what the author sees in a picture viewer
        pixels, photometric = _eight_bit(img)
    now = datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyID"):
        setattr(ds, keyword, template.get(keyword, "") if template is not None else "")
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # workstation: a picture, not a scanned film
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = f"pictures from {path.parent.name}"[:64]
    ds.DerivationDescription = f"converted by testtool from {path.name}"[:1024]
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _eight_bit(img: Image.Image) -> tuple[np.ndarray, str]:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= 255 and low >= 0:
            return values.astype(np.uint8), "MONOCHROME2"
        scaled = (values - low) * 255.0 / (high - low) if high > low else np.zeros_like(values)
        return _round_to_uint8(scaled), "MONOCHROME2"
    if img.mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8), "MONOCHROME2"
    return np.asarray(img.convert("RGB"), dtype=np.uint8), "RGB"


# ---------------------------------------------------------------------------------------------------
# Order: series, time point, position along the slice normal


def order_series(images: list[InputImage]) -> list[InputImage]:
    """One series in the protocol's slice order (time point, then along the normal); sets timepoint and
    slice_index on each image. Repeated positions mean time points, ordered by TemporalPositionIdentifier,
    TriggerTime, then InstanceNumber; without geometry TemporalPositionIdentifier alone decides."""
    orientation = next((i.orientation for i in images if i.orientation), None)
    normal = np.cross(orientation[:3], orientation[3:]) if orientation else None
    located = normal is not None and all(i.position is not None for i in images)

    def along_normal(image: InputImage) -> float:
        return round(float(np.dot(normal, image.position)), _POSITION_DECIMALS)

    def fallback(image: InputImage) -> tuple:
        return (_number(image.dataset, "InstanceNumber"), image.source.name, str(image.source))

    def temporal(image: InputImage) -> tuple:
        ds = image.dataset
        return (_number(ds, "TemporalPositionIdentifier"), _number(ds, "TriggerTime"), *fallback(image))

    timepoint: dict[int, int] = {}
    if located:
        by_position: dict[float, list[InputImage]] = defaultdict(list)
        for image in images:
            by_position[along_normal(image)].append(image)
        if any(len(group) > 1 for group in by_position.values()):
            for group in by_position.values():
                for rank, image in enumerate(sorted(group, key=temporal)):
                    timepoint[id(image)] = rank
    if not timepoint:
        identifiers = [_number(i.dataset, "TemporalPositionIdentifier") for i in images]
        distinct = sorted(set(identifiers))
        if len(distinct) > 1 and math.inf not in distinct:
            for image, value in zip(images, identifiers, strict=True):
                timepoint[id(image)] = distinct.index(value)

    def key(image: InputImage) -> tuple:
        where = (along_normal(image),) if located else ()
        return (timepoint.get(id(image), 0), *where, *fallback(image))

    ordered = sorted(images, key=key)
    next_slice: Counter[int] = Counter()
    for image in ordered:
        image.timepoint = timepoint.get(id(image), 0)
        image.slice_index = next_slice[image.timepoint]
        next_slice[image.timepoint] += image.frames
    return ordered


def _number(ds: Dataset, keyword: str) -> float:
    try:
        return float(ds.get(keyword))
    except (TypeError, ValueError):
        return math.inf


# ---------------------------------------------------------------------------------------------------
# Pixels


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
    slope = _first_float(_frame_attribute(ds, frame_index, rescale, "RescaleSlope"), 1.0)
    intercept = _first_float(_frame_attribute(ds, frame_index, rescale, "RescaleIntercept"), 0.0)
    modality = values.astype(np.float64) * slope + intercept
    center = _first_float(_frame_attribute(ds, frame_index, voi, "WindowCenter"), None)
    width = _first_float(_frame_attribute(ds, frame_index, voi, "WindowWidth"), None)
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
    return _round_to_uint8(y)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return _round_to_uint8((values - low) * 255.0 / (high - low))


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
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

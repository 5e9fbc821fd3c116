"""Finds what to send in a study folder: every DICOM instance, PNG/JPEG pictures, and why the rest is skipped.

Why this exists: a model author points the tool at whatever folder they have (nested exports, stray
README files, a DICOMDIR, a few PNG screenshots). The tool must send every DICOM instance, convert
PNG/JPEG files into real DICOM (testtool.conversion), skip the rest with a reason a person
understands, and hand over the instances in the protocol's order (testtool.study). A file the worker would
refuse (its rule, dicom_geometry.acceptance: no Part 10 header, no SOPInstanceUID, pixel data that does not
match its header) is left out with a note: sent, it would fail the whole study with a 400.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, generate_uid

from dicom_geometry import frame_count, frame_geometry
from dicom_geometry.acceptance import NotReadable, Refused, read_instance_header
from testtool.conversion import convert_folder
from testtool.study import InputImage, LoadedStudy, order_series

MEDIA_STORAGE_DIRECTORY = UID("1.2.840.10008.1.3.10")
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
UNDEFINED_LENGTH = 0xFFFFFFFF
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


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
    for number, (_, paths) in enumerate(sorted(by_folder.items()), start=next_number):
        converted, problems = convert_folder(paths, study_uid, number, template)
        for source, data in converted:
            header = dcmread(io.BytesIO(data), stop_before_pixels=True)
            dicoms.append(make_image(None, source, header, forced=False, memory=data))
        skipped.extend(problems)

    grouped: dict[str, list[InputImage]] = defaultdict(list)
    for image in dicoms:
        grouped[image.series_instance_uid].append(image)
    series_order = sorted(grouped, key=lambda uid: (_series_number(grouped[uid][0].dataset) or math.inf, uid))
    series = {uid: order_series(grouped[uid]) for uid in series_order}
    images = [image for uid in series_order for image in series[uid]]
    return LoadedStudy(study_uid, images, series, skipped)


def make_image(path: Path | None, source: Path, header: Dataset, forced: bool, memory=None) -> InputImage:
    geometry = frame_geometry(header, 0)
    return InputImage(
        path=path,
        source=source,
        dataset=header,
        sop_instance_uid=str(header.SOPInstanceUID),
        series_instance_uid=str(header.get("SeriesInstanceUID", "") or f"no-series-uid:{source.parent}"),
        rows=int(header.get("Rows", 0) or 0),
        cols=int(header.get("Columns", 0) or 0),
        frames=frame_count(header),
        position=geometry.position,
        orientation=geometry.orientation,
        forced=forced,
        _memory=memory,
    )


def _classify(path: Path) -> tuple[str, object]:
    """('dicom', InputImage) | ('picture', path) | ('skip', reason)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return "skip", f"cannot be read: {exc.strerror or exc}"
    if size == 0:
        return "skip", "empty file"
    try:
        kind, value = _read_dicom(path, force=False)
        refusal = _worker_refusal(path, size) if kind == "dicom" else None
        return ("skip", refusal) if refusal else (kind, value)
    except InvalidDicomError:
        pass  # no DICM preamble: maybe a picture, maybe a preamble-less DICOM
    except Exception as exc:  # noqa: BLE001 - any parser failure means "broken", never a crash
        return "skip", f"broken DICOM file ({_plain(exc)})"
    picture = _picture_format(path)
    if picture in ("PNG", "JPEG", "MPO"):
        return "picture", path
    try:
        kind, value = _read_dicom(path, force=True)
        if kind == "dicom":
            return "skip", _worker_refusal(path, size) or "left out: the worker refuses a file it must force to read"
        if value != "not DICOM":
            return kind, value
    except Exception:  # noqa: BLE001, S110 - forced parsing of a non-DICOM file fails in many ways
        pass
    if picture:
        return "skip", f"a {picture} image: only PNG and JPEG pictures are converted to DICOM"
    if _looks_like_text(path):
        return "skip", "a text file, not DICOM or a PNG/JPEG picture"
    return "skip", "not a DICOM file, nor a PNG/JPEG picture"


def _worker_refusal(path: Path, size: int) -> str | None:
    """Why the worker would refuse the file as an instance (its own rule, dicom_geometry.acceptance), or None:
    sent, it would fail the whole request with a 400, so it is left out with this note instead."""
    try:
        with path.open("rb") as handle:
            read_instance_header(handle, size, "the file")
    except NotReadable as refusal:
        return f"left out, the worker would refuse it: not a DICOM Part 10 file ({refusal.reason})"
    except Refused as refusal:
        return f"left out, the worker would refuse it: {refusal.message}"
    return None


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
    return "dicom", make_image(path, path, header, forced=force)


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

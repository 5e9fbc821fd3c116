"""Maps a model's answer onto the input images: what to draw on which frame, and why the rest is not drawn.

Why this is the one place where the protocol's answer meets the input: it slices 3D masks with the
protocol layout (timepoint, slice, row, column) in the order testtool.study computed, refuses masks whose
shape does not match the images (a width/height swap must not look right here and wrong in the viewer),
places world-coordinate measurements with each frame's own geometry, and turns everything it cannot map
into a plain-words note instead of an exception.

World coordinates (linear_measurements_2d with coordinates_type "world"): the protocol's points are
[x, y] in patient mm; such a point is drawn where the frame's plane has that x and y (possible unless the
plane contains the z axis, as sagittal and coronal planes do). A point [x, y, z] is projected onto the
plane. Either way the frame's own position and orientation are used (enhanced multi-frame: its
functional groups), see dicom_geometry.frames.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from arterys_http.label_colours import label_colours
from arterys_http.protocol import DICOM_TYPES, MASK_TYPES
from testtool.drawing import BOX_COLOR, LINE_COLOR
from testtool.overlay import DEFAULT_PALETTE, Color, palette_lookup
from testtool.study import InputImage, LoadedStudy


@dataclass(frozen=True, eq=False)
class ProbabilityMask:
    mask: np.ndarray  # uint8 (rows, cols), 0..255 = probability 0..1
    label: str = ""
    threshold: float = 0.5
    color: Color = (255, 0, 0)
    kind: ClassVar[str] = "probability"


@dataclass(frozen=True, eq=False)
class BooleanMask:
    mask: np.ndarray
    label: str = ""
    color: Color = (0, 220, 0)
    kind: ClassVar[str] = "boolean"


@dataclass(frozen=True, eq=False)
class Heatmap:
    mask: np.ndarray
    label: str = ""
    palette: dict | None = None  # anchorpoints palette; None = DEFAULT_PALETTE
    kind: ClassVar[str] = "heatmap"


@dataclass(frozen=True, eq=False)
class LabelMask:
    mask: np.ndarray
    label_map: dict[str, str]
    label: str = ""
    colors: dict[int, Color] = field(default_factory=dict)  # class value -> the colour of its name
    kind: ClassVar[str] = "labels"


@dataclass(frozen=True)
class Box:
    top_left: tuple[float, float]  # [col, row]
    bottom_right: tuple[float, float]
    label: str = ""
    color: Color = BOX_COLOR
    kind: ClassVar[str] = "box"


@dataclass(frozen=True)
class Measurement:
    start: tuple[float, float]  # pixel space [x = col, y = row]
    end: tuple[float, float]
    label: str = ""
    length_text: str = ""
    color: Color = LINE_COLOR
    kind: ClassVar[str] = "measurement"


@dataclass(frozen=True)
class TextLines:
    lines: tuple[str, ...]
    kind: ClassVar[str] = "text"


Finding = ProbabilityMask | BooleanMask | Heatmap | LabelMask | Box | Measurement | TextLines
MASK_FINDINGS = (ProbabilityMask, BooleanMask, Heatmap, LabelMask)
FindingMap = dict[tuple[str, int], list[Finding]]  # (SOPInstanceUID, 0-based frame index) -> findings


class _Skip(Exception):
    """Something in the answer that cannot be drawn; its message becomes a note."""


def findings_for_study(study: LoadedStudy, result_json: dict, binaries: list[bytes],
                       draw_labels: bool = False) -> tuple[FindingMap, list[str]]:
    """Maps an answer onto the input images: ({(sop_uid, frame_index): findings}, notes).

    frame_index is 0-based (the protocol's frame_number minus one). Never raises for a bad answer.
    """
    findings: dict[tuple[str, int], list[Finding]] = defaultdict(list)
    notes: list[str] = []
    if not isinstance(result_json, dict):
        return {}, ["the result is not a JSON object: nothing drawn"]
    by_sop = {image.sop_instance_uid: image for image in study.images}
    _map_parts(study, by_sop, result_json, list(binaries or []), findings, notes)
    _map_boxes(by_sop, result_json, findings, notes)
    _map_measurements(by_sop, result_json, findings, notes)
    if draw_labels:
        _map_ml_json(study, result_json, findings, notes)
    return dict(findings), notes


def measurement_length(start, end, coordinates_type: str, pixel_spacing) -> tuple[float, str]:
    """(length, unit). Pixel coordinates use PixelSpacing = [row spacing, column spacing] (mm) when known,
    else stay in px; world coordinates are already mm."""
    if coordinates_type == "world":
        a, b = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        return float(np.linalg.norm(b - a)), "mm"
    if coordinates_type != "pixel":
        raise ValueError(f"coordinates_type {coordinates_type!r} is neither 'pixel' nor 'world'")
    dx, dy = float(end[0]) - float(start[0]), float(end[1]) - float(start[1])
    if pixel_spacing:
        row_spacing, col_spacing = float(pixel_spacing[0]), float(pixel_spacing[1])
        return math.hypot(dx * col_spacing, dy * row_spacing), "mm"
    return math.hypot(dx, dy), "px"


def world_to_pixel(image: InputImage, frame: int, point) -> tuple[float, float] | None:
    """[x, y] (on the frame's plane) or [x, y, z] (projected onto it) patient mm -> [col, row] on the frame."""
    geometry = image.geometry(frame)
    if len(point) >= 3:
        return geometry.pixel_of(point[:3])
    return geometry.pixel_of_xy(point[0], point[1])


# ---------------------------------------------------------------------------------------------------
# Parts: masks


def _map_parts(study, by_sop, result_json, binaries, findings, notes) -> None:
    parts = result_json.get("parts", [])
    if not isinstance(parts, list):
        notes.append("'parts' is not a list: no mask drawn")
        return
    if len(parts) != len(binaries):
        notes.append(
            f"{len(parts)} part(s) but {len(binaries)} binary part(s): each entry of 'parts' is paired with "
            "the binary at the same position, so masks after a missing binary may be drawn from the wrong one"
        )
    palettes = result_json.get("palettes") if isinstance(result_json.get("palettes"), dict) else {}
    colours = answer_colours(result_json)
    for index, (part, data) in enumerate(zip(parts, binaries, strict=False)):
        label = str(part.get("label", "")) if isinstance(part, dict) else ""
        name = f"part {index + 1}" + (f" ({label})" if label else "")
        try:
            _map_part(study, by_sop, part, data, colours, palettes, findings, notes, name)
        except _Skip as skip:
            notes.append(f"{name}: {skip}; not drawn")


def answer_colours(result_json: dict) -> dict[str, Color]:
    """One colour per label the answer's masks name (part labels, label_map class names), from
    arterys_http.label_colours: the same label is the same colour in every series, picture and file."""
    names = []
    for part in result_json.get("parts") or []:
        if isinstance(part, dict) and part.get("binary_type") in MASK_TYPES:
            names.append(str(part.get("label", "")) or f"{part.get('binary_type')}")
            if isinstance(part.get("label_map"), dict):
                names.extend(str(value) for value in part["label_map"].values())
    return label_colours(names)


def _map_part(study, by_sop, part, data, colours, palettes, findings, notes, name) -> None:
    if not isinstance(part, dict):
        raise _Skip("not a JSON object")
    binary_type = part.get("binary_type")
    if binary_type in DICOM_TYPES:
        return  # DICOM outputs are files for the archive, not overlays
    if binary_type not in MASK_TYPES:
        raise _Skip(f"unknown binary_type {binary_type!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _Skip("its binary is not bytes")
    shape = part.get("binary_data_shape")
    if not isinstance(shape, dict):
        raise _Skip("no binary_data_shape object")
    make = _mask_maker(part, binary_type, colours, palettes, notes, name, data)
    if "depth" in shape or "timepoints" in shape or "SeriesInstanceUID" in part:
        for image, frame, mask in _slices_3d(study, part, shape, data):
            findings[(image.sop_instance_uid, frame)].append(make(mask))
    elif "dicom_image" in part:
        image, frame = _target(part.get("dicom_image"), by_sop)
        height, width = _dimension(shape, "height"), _dimension(shape, "width")
        if len(data) != height * width:
            raise _Skip(f"{len(data)} bytes, but height*width = {height}*{width} = {height * width}")
        _check_plane(image, height, width)
        findings[(image.sop_instance_uid, frame)].append(make(_as_mask(data, (height, width))))
    else:
        raise _Skip("neither a SeriesInstanceUID (3D mask) nor a dicom_image (2D mask)")


def _slices_3d(study: LoadedStudy, part: dict, shape: dict, data):
    """(image, frame, mask) per slice: the mask is (timepoints, depth, height, width) in C order."""
    series_uid = part.get("SeriesInstanceUID")
    if series_uid not in study.series:
        raise _Skip(f"SeriesInstanceUID {series_uid!r} is not a series of the study")
    timepoints = _dimension(shape, "timepoints") if "timepoints" in shape else 1
    depth, height, width = (_dimension(shape, key) for key in ("depth", "height", "width"))
    expected = timepoints * depth * height * width
    if len(data) != expected:
        raise _Skip(f"{len(data)} bytes, but timepoints*depth*height*width = {expected}")
    series_timepoints, series_depth = study.series_shape(series_uid)
    if (timepoints, depth) != (series_timepoints, series_depth):
        raise _Skip(
            f"timepoints={timepoints}, depth={depth}, but the series has {series_timepoints} time point(s) "
            f"of {series_depth} slice(s)"
        )
    images = [image for image in study.series[series_uid] if image.has_pixels]
    for image in images:
        _check_plane(image, height, width)
    volume = _as_mask(data, (timepoints, depth, height, width))
    for image in images:
        for frame in range(image.frames):
            yield image, frame, volume[image.timepoint, image.slice_index + frame]


def _as_mask(data, shape) -> np.ndarray:
    # No copy: the tool hands over masks mapped from their files, which can be hundreds of MiB.
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _check_plane(image: InputImage, height: int, width: int) -> None:
    if (height, width) == (image.rows, image.cols):
        return
    hint = " (width and height look swapped)" if (height, width) == (image.cols, image.rows) else ""
    raise _Skip(
        f"height x width = {height}x{width}, but the image has {image.rows} rows x {image.cols} columns{hint}"
    )


def _dimension(shape: dict, key: str) -> int:
    value = shape.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Skip(f"binary_data_shape.{key} is {value!r}, not a positive integer")
    return value


def _mask_maker(part, binary_type, colours, palettes, notes, name, data):
    """A function mask -> Finding for this part, after checking its per-type metadata once."""
    label = str(part.get("label", ""))
    color = colours.get(label or binary_type, (255, 0, 0))
    if binary_type == "probability_mask":
        threshold = part.get("probability_threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            notes.append(f"{name}: probability_threshold {threshold!r} is not a number in 0..1; 0.5 used")
            threshold = 0.5
        return lambda mask: ProbabilityMask(mask, label, float(threshold), color)
    if binary_type == "boolean_mask":
        return lambda mask: BooleanMask(mask, label, color)
    if binary_type == "heatmap":
        palette = _palette(part, palettes, notes, name)
        return lambda mask: Heatmap(mask, label, palette)
    label_map = part.get("label_map")
    if not isinstance(label_map, dict) or not label_map or not all(str(k).isdigit() for k in label_map):
        notes.append(f"{name}: label_map {label_map!r} is not an object with digit keys; class numbers shown")
        label_map = {}
    present = np.flatnonzero(np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256))
    missing = [int(v) for v in present if v and str(int(v)) not in label_map]
    if missing and label_map:
        notes.append(f"{name}: value(s) {missing} have no label_map entry; those pixels are not drawn")
    elif missing:
        label_map = {str(v): f"class {v}" for v in missing}
    names = {str(k): str(v) for k, v in label_map.items()}
    by_name = {**label_colours(names.values()), **{n: c for n, c in colours.items() if n in names.values()}}
    class_colours = {int(k): by_name[v] for k, v in names.items() if k.isdigit()}
    return lambda mask: LabelMask(mask, names, label, class_colours)


def _palette(part, palettes, notes, name) -> dict:
    reference = part.get("palette")
    if reference is None:
        return DEFAULT_PALETTE
    palette = reference if isinstance(reference, dict) else palettes.get(reference)
    if palette is None:
        notes.append(f"{name}: palette {reference!r} is not in the top-level 'palettes'; default used")
        return DEFAULT_PALETTE
    try:
        palette_lookup(palette)
    except ValueError as exc:
        notes.append(f"{name}: palette {reference!r} is invalid ({exc}); default palette used")
        return DEFAULT_PALETTE
    return palette


# ---------------------------------------------------------------------------------------------------
# Boxes, measurements, classification text


def _target(reference, by_sop) -> tuple[InputImage, int]:
    """(image, 0-based frame) named by {SOPInstanceUID, frame_number?}."""
    if not isinstance(reference, dict):
        raise _Skip("the image reference is not an object")
    image = by_sop.get(reference.get("SOPInstanceUID"))
    if image is None:
        raise _Skip(f"SOPInstanceUID {reference.get('SOPInstanceUID')!r} is not an input image")
    frame_number = reference.get("frame_number", 1)
    if frame_number is None:
        frame_number = 1
    valid = isinstance(frame_number, int) and not isinstance(frame_number, bool)
    if not valid or not 0 < frame_number <= image.frames:
        raise _Skip(f"frame_number {frame_number!r} is not in 1..{image.frames}")
    return image, frame_number - 1


def _point(value, name: str, size: int = 2) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) < size or not all(math.isfinite(v) for v in numbers):
        raise _Skip(f"{name} {value!r} is not a list of {size} numbers")
    return numbers


def _items(result_json, key, notes) -> list:
    items = result_json.get(key, [])
    if items is None:
        return []
    if not isinstance(items, list):
        notes.append(f"'{key}' is not a list: not drawn")
        return []
    return items


def _map_boxes(by_sop, result_json, findings, notes) -> None:
    for number, item in enumerate(_items(result_json, "bounding_boxes_2d", notes), start=1):
        try:
            image, frame = _target(item, by_sop)
            top_left = _point(item.get("top_left"), "top_left")[:2]
            bottom_right = _point(item.get("bottom_right"), "bottom_right")[:2]
        except _Skip as skip:
            notes.append(f"bounding box {number}: {skip}; not drawn")
            continue
        inside = all(0 <= p[0] < image.cols and 0 <= p[1] < image.rows for p in (top_left, bottom_right))
        if not inside:
            notes.append(f"bounding box {number}: corners {list(top_left)}, {list(bottom_right)} are outside "
                          f"the {image.cols}x{image.rows} (columns x rows) image")
        box = Box(top_left, bottom_right, str(item.get("label", "")))
        findings[(image.sop_instance_uid, frame)].append(box)


def _map_measurements(by_sop, result_json, findings, notes) -> None:
    for number, item in enumerate(_items(result_json, "linear_measurements_2d", notes), start=1):
        try:
            image, frame = _target(item, by_sop)
            kind = item.get("coordinates_type", "pixel")
            start, end = _point(item.get("start"), "start"), _point(item.get("end"), "end")
            value, unit = measurement_length(start, end, kind, image.geometry(frame).pixel_spacing)
        except (_Skip, ValueError) as problem:
            notes.append(f"linear measurement {number}: {problem}; not drawn")
            continue
        label = str(item.get("label", ""))
        if kind == "world":
            placed = world_to_pixel(image, frame, start), world_to_pixel(image, frame, end)
            if None in placed:
                notes.append(f"linear measurement {number}: {_why_not_placed(image, frame, start)}; "
                             "shown as text only")
                findings[(image.sop_instance_uid, frame)].append(TextLines((f"{label}: {value:.1f} {unit}",)))
                continue
            if len(start) < 3 or len(end) < 3:  # [x, y] on a tilted plane: the length on the plane
                value, unit = measurement_length(*placed, "pixel", image.geometry(frame).pixel_spacing)
            start, end = placed
            if not all(0 <= p[0] <= image.cols and 0 <= p[1] <= image.rows for p in placed):
                notes.append(f"linear measurement {number}: placed at [col, row] {_rounded(start)} to "
                             f"{_rounded(end)}, outside the {image.cols}x{image.rows} (columns x rows) image")
        findings[(image.sop_instance_uid, frame)].append(
            Measurement(start[:2], end[:2], label, f"{value:.1f} {unit}"))


def _why_not_placed(image: InputImage, frame: int, point) -> str:
    geometry = image.geometry(frame)
    if geometry.position is None or geometry.orientation is None or geometry.pixel_spacing is None:
        return ("world coordinates need the image's position, orientation and pixel spacing to be placed, "
                "and this image lacks them")
    return ("world [x, y] names no single point of this image, whose plane contains the z axis (sagittal or "
            "coronal); give [x, y, z] to place it")


def _rounded(point) -> list[float]:
    return [round(float(v), 1) for v in point[:2]]


def _json_lines(prefix: str, value) -> list[str]:
    """Free JSON as short lines; strings without quotes, everything else as JSON (1 stays 1)."""
    def show(v):
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

    if isinstance(value, dict):
        return [f"{prefix}{key}: {show(v)}" for key, v in value.items()]
    if isinstance(value, list):
        return [f"{prefix}{show(v)}" for v in value]
    return [f"{prefix}{show(value)}"]


def _map_ml_json(study: LoadedStudy, result_json, findings, notes) -> None:
    if result_json.get("study_ml_json") is not None:
        lines = tuple(_json_lines("study · ", result_json["study_ml_json"]))
        for image in study.images:
            for frame in range(image.frames):
                findings[(image.sop_instance_uid, frame)].append(TextLines(lines))
    series_json = result_json.get("series_ml_json")
    if series_json is None:
        return
    if not isinstance(series_json, dict):
        notes.append("'series_ml_json' is not an object keyed by SeriesInstanceUID: not shown")
        return
    for series_uid, value in series_json.items():
        if series_uid not in study.series:
            notes.append(f"series_ml_json: {series_uid!r} is not a series of the study; not shown")
            continue
        lines = tuple(_json_lines("series · ", value))
        for image in study.series[series_uid]:
            for frame in range(image.frames):
                findings[(image.sop_instance_uid, frame)].append(TextLines(lines))
